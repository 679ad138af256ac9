// Array parameters in Postgres' binary format (what array_send writes and
// array_recv reads), for the settlement statements' column arrays.
//
// node-postgres sends every parameter as text unless it is a Buffer, which it
// sends as binary. A text array costs twice: the node escapes, quotes and
// joins every element (pg's arrayString), then Postgres parses it all back
// (array_in, then each element's input function: timestamptz_in parses a
// date and a time zone, int8in and uuid_in their digits), while the batch
// holds its locks. Measured with 1,000 transfers' 26 columns in one statement
// (`SELECT count(*) FROM unnest(...)`, Postgres 15 on loopback): from building
// the values to the answer, 11–17 ms as text, 5.4–8.8 ms in binary, of which
// building the binary arrays 1.8–2.5 ms.
//
// The format, from Postgres' arrayfuncs.c (array_recv):
//   int32 number of dimensions (0 for an empty array, else 1 here)
//   int32 flags (1 if any element is NULL)
//   int32 element type OID (array_recv refuses any other than the cast's)
//   per dimension: int32 length, int32 lower bound (1)
//   per element: int32 byte length (-1 for NULL), then the element as its
//   type's send function writes it: text as UTF-8 (textrecv checks the
//   encoding and refuses NUL, as text input does), bigint as 8 bytes
//   big-endian, uuid as its 16 bytes, bytea as itself, timestamptz as
//   microseconds since 2000-01-01 00:00 UTC in 8 bytes.
// No library encodes this for node-postgres' parameters: the drivers that
// speak binary (postgrejs, pgwire) do it inside their own protocol code, and
// pg-copy-streams-binary writes COPY rows, not parameters.
import assert from 'node:assert/strict';

/** The element types the settlement write sends as arrays, with their type OIDs (pg_type.oid). */
const elementOids = {
  text: 25,
  bigint: 20,
  uuid: 2950,
  bytea: 17,
  timestamptz: 1184,
} as const;

export type BinaryElementType = keyof typeof elementOids;

/** The JavaScript value each element type takes; null is SQL NULL. */
export interface BinaryElementValue {
  text: string;
  bigint: bigint;
  uuid: string;
  bytea: Buffer;
  timestamptz: Date;
}

/** Bytes of the header of a one-dimensional array: dimensions, flags, element type, length, lower bound. */
const headerBytes = 20;
/** Bytes of each element's length prefix. */
const lengthBytes = 4;
/** Postgres' timestamp epoch (2000-01-01T00:00:00Z) in Unix milliseconds. */
const postgresEpochMs = 946_684_800_000;
/** 2^32, to split a safe integer into two 32-bit halves. */
const twoPower32 = 4_294_967_296;
/** Postgres' own limit on the elements of an array (MaxArraySize, arrayfuncs). */
export const binaryArrayElementsMax = 134_217_727;

/**
 * Most bytes one element of `type` takes, prefix included; text by its UTF-16
 * length (3 UTF-8 bytes per unit at most). Refuses a value of another
 * JavaScript type: the types say it cannot happen, and written anyway it
 * would be stored as something else (Number('') is 0), where text would
 * have been refused by Postgres.
 */
function elementBytesMax(type: BinaryElementType, value: unknown): number {
  switch (type) {
    case 'text':
      if (typeof value !== 'string') throw new TypeError(`text element: ${typeof value}, not a string`);
      return lengthBytes + 3 * value.length;
    case 'bytea':
      if (!Buffer.isBuffer(value)) throw new TypeError(`bytea element: ${typeof value}, not a Buffer`);
      return lengthBytes + value.length;
    case 'uuid':
      if (typeof value !== 'string') throw new TypeError(`uuid element: ${typeof value}, not a string`);
      return lengthBytes + 16;
    case 'bigint':
      if (typeof value !== 'bigint') throw new TypeError(`bigint element: ${typeof value}, not a bigint`);
      return lengthBytes + 8;
    case 'timestamptz':
      if (!(value instanceof Date)) throw new TypeError(`timestamptz element: ${typeof value}, not a Date`);
      return lengthBytes + 8;
  }
}

function hexDigit(uuid: string, at: number): number {
  const c = uuid.charCodeAt(at);
  if (c >= 48 && c <= 57) return c - 48; // 0-9
  if (c >= 97 && c <= 102) return c - 87; // a-f
  if (c >= 65 && c <= 70) return c - 55; // A-F
  throw new RangeError(`uuid ${JSON.stringify(uuid)}: not hexadecimal at ${at}`);
}

/** Writes a uuid in its canonical 8-4-4-4-12 form as 16 bytes; anything else throws (uuid_in would refuse it too, or read it differently). */
function writeUuid(buffer: Buffer, offset: number, uuid: string): void {
  if (uuid.length !== 36 || uuid[8] !== '-' || uuid[13] !== '-' || uuid[18] !== '-' || uuid[23] !== '-') {
    throw new RangeError(`uuid ${JSON.stringify(uuid)}: not in the 8-4-4-4-12 form`);
  }
  let byte = 0;
  for (let at = 0; at < 36; at += 2) {
    if (at === 8 || at === 13 || at === 18 || at === 23) at += 1;
    buffer[offset + byte] = (hexDigit(uuid, at) << 4) | hexDigit(uuid, at + 1);
    byte += 1;
  }
}

/** Writes a signed 64-bit integer big-endian; outside int64 it throws (RangeError). */
function writeInt64(buffer: Buffer, offset: number, value: bigint): void {
  const n = Number(value);
  if (Number.isSafeInteger(n)) {
    // Most values (amounts, sequence numbers) fit a double exactly: two 32-bit
    // writes instead of BigInt arithmetic.
    const high = Math.floor(n / twoPower32);
    buffer.writeInt32BE(high, offset);
    buffer.writeUInt32BE(n - high * twoPower32, offset + 4);
  } else {
    buffer.writeBigInt64BE(value, offset); // throws RangeError outside int64
  }
}

function writeTimestamp(buffer: Buffer, offset: number, date: Date): void {
  const ms = date.getTime();
  if (!Number.isFinite(ms)) throw new RangeError('timestamptz: invalid Date');
  const microseconds = (ms - postgresEpochMs) * 1000;
  if (Number.isSafeInteger(microseconds)) {
    // Within ±285 years of 2000: exact as a double.
    const high = Math.floor(microseconds / twoPower32);
    buffer.writeInt32BE(high, offset);
    buffer.writeUInt32BE(microseconds - high * twoPower32, offset + 4);
  } else {
    buffer.writeBigInt64BE(BigInt(ms - postgresEpochMs) * 1000n, offset);
  }
}

/** Writes a string as UTF-8 after its length prefix; returns the bytes written, prefix included. */
function writeText(buffer: Buffer, offset: number, text: string): number {
  const length = text.length;
  // ASCII (the usual case: BICs, ids, statuses, reason codes) byte by byte;
  // a native write per short string costs more than the loop.
  let i = 0;
  for (; i < length; i++) {
    const c = text.charCodeAt(i);
    if (c > 0x7f) break;
    buffer[offset + lengthBytes + i] = c;
  }
  const written = i === length ? length : i + buffer.write(text.slice(i), offset + lengthBytes + i, 'utf8');
  buffer.writeInt32BE(written, offset);
  return lengthBytes + written;
}

/**
 * A one-dimensional Postgres array of `type` in the binary format, holding
 * `get(row, index)` for each row, for a parameter cast to `type[]`. node-postgres
 * sends a Buffer parameter as binary as it is.
 */
export function binaryArray<T, K extends BinaryElementType>(
  type: K,
  rows: readonly T[],
  get: (row: T, index: number) => BinaryElementValue[K] | null,
): Buffer {
  assert(rows.length <= binaryArrayElementsMax, `an array of ${rows.length} elements is above Postgres' limit`);
  const values: (BinaryElementValue[K] | null)[] = new Array(rows.length);
  let bytesMax = headerBytes;
  for (let i = 0; i < rows.length; i++) {
    const value = get(rows[i] as T, i);
    values[i] = value;
    bytesMax += value === null ? lengthBytes : elementBytesMax(type, value);
  }
  const buffer = Buffer.allocUnsafe(bytesMax);
  buffer.writeInt32BE(rows.length === 0 ? 0 : 1, 0);
  buffer.writeInt32BE(elementOids[type], 8);
  if (rows.length === 0) {
    buffer.writeInt32BE(0, 4);
    return buffer.subarray(0, 12);
  }
  buffer.writeInt32BE(rows.length, 12);
  buffer.writeInt32BE(1, 16);
  let offset = headerBytes;
  let hasNull = 0;
  for (const value of values) {
    if (value === null) {
      buffer.writeInt32BE(-1, offset);
      offset += lengthBytes;
      hasNull = 1;
      continue;
    }
    switch (type) {
      case 'text':
        offset += writeText(buffer, offset, value as string);
        break;
      case 'bigint':
      case 'timestamptz':
        buffer.writeInt32BE(8, offset);
        if (type === 'bigint') writeInt64(buffer, offset + lengthBytes, value as bigint);
        else writeTimestamp(buffer, offset + lengthBytes, value as Date);
        offset += lengthBytes + 8;
        break;
      case 'uuid':
        buffer.writeInt32BE(16, offset);
        writeUuid(buffer, offset + lengthBytes, value as string);
        offset += lengthBytes + 16;
        break;
      case 'bytea': {
        const bytes = value as Buffer;
        buffer.writeInt32BE(bytes.length, offset);
        bytes.copy(buffer, offset + lengthBytes);
        offset += lengthBytes + bytes.length;
        break;
      }
    }
  }
  buffer.writeInt32BE(hasNull, 4);
  assert(offset <= bytesMax, 'binary array overran its estimate');
  return buffer.subarray(0, offset);
}
