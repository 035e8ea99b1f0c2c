/**
 * The magic and layout version each container type writes at the start of its header
 * (docs/FORMAT.md §11): the containers write and check them, and the inspector
 * (`lib/records.ts`) decodes only the layouts it knows. A container of another layout
 * version (another shmutils, in a rolling deploy) is refused, never read with this
 * version's offsets.
 * @module
 */

/** One container type's header identity. */
export interface Layout {
  /** u32 at offset 0: the type's four letters, little-endian. */
  readonly magic: number
  /** u32 at offset 4: the layout version this shmutils reads and writes. */
  readonly version: number
}

/**
 * A SharedMap: `'SMAP'`, version 3 (§11.2). Version 2 hashed keys with FNV-1a, unkeyed
 * (version 3 keys the hash with a secret in the header: the maps would not find each
 * other's keys); version-1 writers did not keep the stripes' write sequence.
 */
export const MAP_LAYOUT: Layout = Object.freeze({ magic: 0x5041_4d53, version: 3 })

/** A Channel: `'SCHN'`, version 1 (§11.3). */
export const CHANNEL_LAYOUT: Layout = Object.freeze({ magic: 0x4e48_4353, version: 1 })
