import path from 'node:path';
import { optionalPositiveInteger, optionalString, rejectUnknownKeys, type ConfigTable } from '../core/configTable.js';

/** `[images]`: where the OCI layouts are, and how much one layer may unpack to. */
export interface ImagesConfig {
  dir: string;
  /** Uncompressed bytes one image layer may hold. */
  maxLayerBytes: number;
  /** Tar entries one image layer may hold. */
  maxLayerEntries: number;
}

const IMAGES_KEYS = ['dir', 'max_layer_bytes', 'max_layer_entries'];

export function defaultImagesConfig(daemonRoot: string): ImagesConfig {
  return { dir: path.join(daemonRoot, 'images'), maxLayerBytes: 8 * 1024 ** 3, maxLayerEntries: 1_000_000 };
}

export function applyImagesToml(images: ImagesConfig, table: ConfigTable): void {
  rejectUnknownKeys(table, 'images', IMAGES_KEYS);
  images.dir = optionalString(table, 'dir', 'images.') ?? images.dir;
  images.maxLayerBytes = optionalPositiveInteger(table, 'max_layer_bytes', 'images.') ?? images.maxLayerBytes;
  images.maxLayerEntries = optionalPositiveInteger(table, 'max_layer_entries', 'images.') ?? images.maxLayerEntries;
}
