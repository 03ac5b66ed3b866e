/** kts's version, as package.json states it (version.unit.spec.ts keeps the two equal); a constant, so the CLI reads no file to print it. */
export const KTS_VERSION = '0.1.0';
