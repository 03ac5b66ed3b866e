// What a container spec takes from an image (src/images/ parses it from the OCI image config).
/** The parts of an OCI image config a container spec is built from. */
export interface ImageConfig {
  cmd: string[];
  entrypoint: string[];
  /** `KEY=value` strings, in image order. */
  env: string[];
  /** Absolute, or "" when the image sets none. */
  workingDir: string;
  user?: string;
}
