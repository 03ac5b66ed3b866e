import { invalidArgument } from '../core/errors.js';

/** A local image is named by one path component (its layout directory) and a tag. */
export interface ImageRef {
  name: string;
  tag: string;
}

export const DEFAULT_TAG = 'latest';

const NAME_COMPONENT = /^[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*$/;
const TAG = /^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$/;

/**
 * Parses `busybox`, `busybox:latest`, `docker.io/library/busybox:latest`, `localhost:5000/busybox`.
 * No registry is reachable, so any registry host and Docker's implicit `library/` are dropped.
 */
export function parseImageRef(ref: string): ImageRef {
  if (typeof ref !== 'string' || ref.length === 0) throw invalidArgument('image reference must not be empty');
  if (ref.length > 255) throw invalidArgument(`image reference "${ref.slice(0, 64)}…" is longer than 255 characters`);
  if (ref.includes('@')) throw invalidArgument(`image reference "${ref}": references by digest are not supported; use name:tag`);
  const lastSlash = ref.lastIndexOf('/');
  const tagColon = ref.lastIndexOf(':');
  const hasTag = tagColon > lastSlash;
  const tag = hasTag ? ref.slice(tagColon + 1) : DEFAULT_TAG;
  const components = (hasTag ? ref.slice(0, tagColon) : ref).split('/');
  if (components.length > 1 && isRegistryHost(components[0]!)) components.shift();
  if (components.length > 1 && components[0] === 'library') components.shift();
  for (const component of components) {
    if (!NAME_COMPONENT.test(component)) {
      throw invalidArgument(`image reference "${ref}": "${component}" is not a valid name (lowercase letters, digits, separators . _ -)`);
    }
  }
  if (!TAG.test(tag)) throw invalidArgument(`image reference "${ref}": tag "${tag}" is not valid`);
  return { name: components.join('/'), tag };
}

export function formatImageRef(ref: ImageRef): string {
  return `${ref.name}:${ref.tag}`;
}

const HOST = /^[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*(?::\d{1,5})?$/;

/** As Docker decides: a first component with a "." or ":" (or "localhost") is a registry host. */
function isRegistryHost(component: string): boolean {
  const looksLikeHost = component.includes('.') || component.includes(':') || component === 'localhost';
  return looksLikeHost && HOST.test(component);
}
