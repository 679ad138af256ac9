// Arrays in Postgres' binary format must reach Postgres as exactly the values
// the same arrays sent as text do (node-postgres' own encoding, which the
// settlement write used before): checked by the server itself, element by
// element, for edge values and random ones. What the text path refuses, the
// binary path refuses too, in the node or in Postgres.
import fc from 'fast-check';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { databaseAdminUrl } from '../../test/support/database.js';
import { binaryArray, type BinaryElementType, type BinaryElementValue } from './binary-arrays.js';

let connection: pg.Client;
beforeAll(async () => {
  connection = new pg.Client({ connectionString: databaseAdminUrl() });
  await connection.connect();
});
afterAll(async () => {
  await connection?.end();
});

/** The same values as node-postgres sends them in a text array (bigint as decimal strings). */
function asText(values: readonly unknown[]): unknown[] {
  return values.map((v) => (typeof v === 'bigint' ? v.toString() : v));
}

/**
 * Sends `values` once in binary and once as text, and has Postgres compare
 * the two arrays; returns what it found and the binary one as Postgres prints it.
 */
async function roundTrip<K extends BinaryElementType>(type: K, values: readonly (BinaryElementValue[K] | null)[]) {
  const result = await connection.query<{ same: boolean; length: number | null; nulls: number; printed: string }>({
    text: `SELECT $1::${type}[] IS NOT DISTINCT FROM $2::${type}[] AS same, cardinality($1::${type}[]) AS length,
                  (SELECT count(*)::int FROM unnest($1::${type}[]) AS e WHERE e IS NULL) AS nulls, $1::${type}[]::text AS printed`,
    values: [binaryArray(type, values, (v) => v), asText(values)],
  });
  return result.rows[0] as { same: boolean; length: number | null; nulls: number; printed: string };
}

const int64Max = 2n ** 63n - 1n;
const int64Min = -(2n ** 63n);

describe('binaryArray', () => {
  test.each<[BinaryElementType, unknown[]]>([
    ['text', ['', 'a', 'BANKDEFFXXX', 'NULL', 'null', '"quoted"', 'back\\slash', '{braces}', 'com,ma', ' spaced ', 'Zoë Ångström', '日本語', '🙂 emoji', 'x'.repeat(10_000)]],
    ['text', [null, 'after a null', null]],
    [
      'bigint',
      // Both halves of the split into 32-bit words, at the edges of what a double holds exactly.
      [0n, 1n, -1n, 2n ** 32n, -(2n ** 32n), -(2n ** 32n) - 1n, 2n ** 53n - 1n, -(2n ** 53n - 1n), 2n ** 53n, 2n ** 53n + 1n, -(2n ** 53n) - 1n, int64Max, int64Min, null],
    ],
    ['uuid', ['00000000-0000-0000-0000-000000000000', 'ffffffff-ffff-4fff-bfff-ffffffffffff', '3F2504E0-4F89-41D3-9A0C-0305E82C3301', null]],
    ['bytea', [Buffer.alloc(0), Buffer.from([0]), Buffer.from([0, 255, 92, 34, 123, 125]), Buffer.alloc(32, 7), null]],
    [
      'timestamptz',
      [
        new Date('2000-01-01T00:00:00.000Z'),
        new Date('2000-01-01T00:00:00.001Z'),
        new Date('1999-12-31T23:59:59.999Z'),
        new Date('1970-01-01T00:00:00.000Z'),
        new Date('2026-11-27T16:00:00.123Z'),
        new Date('9999-12-31T23:59:59.999Z'),
        new Date('0100-01-01T00:00:00.000Z'),
        null,
      ],
    ],
  ])('%s: the values the text encoding sends, in order, with their NULLs', async (type, values) => {
    const found = await roundTrip(type, values as never[]);
    expect(found.same).toBe(true);
    expect(found.length).toBe(values.length);
    expect(found.nulls).toBe(values.filter((v) => v === null).length);
  });

  test.each<BinaryElementType>(['text', 'bigint', 'uuid', 'bytea', 'timestamptz'])('%s: an empty array is empty, not NULL', async (type) => {
    const found = await roundTrip(type, []);
    expect(found.same).toBe(true);
    expect(found.printed).toBe('{}');
    expect(found.length).toBe(0);
  });

  test('random values arrive as the text encoding sends them', async () => {
    const property = <K extends BinaryElementType>(type: K, element: fc.Arbitrary<BinaryElementValue[K]>) =>
      fc.assert(
        fc.asyncProperty(fc.array(fc.option(element, { freq: 8 }), { maxLength: 40 }), async (values) => {
          expect((await roundTrip(type, values)).same).toBe(true);
        }),
        { numRuns: 40 },
      );
    // Postgres text holds no NUL character (refused either way, below). Graphemes are
    // whole code points: a lone surrogate would become U+FFFD in both encodings alike.
    await property('text', fc.string({ unit: 'grapheme', maxLength: 30 }).filter((s) => !s.includes('\u0000')));
    await property('bigint', fc.bigInt({ min: int64Min, max: int64Max }));
    await property('uuid', fc.uuid());
    await property('bytea', fc.uint8Array({ maxLength: 40 }).map((bytes) => Buffer.from(bytes)));
    await property('timestamptz', fc.date({ min: new Date('0001-01-01T00:00:00Z'), max: new Date('9999-12-31T23:59:59.999Z'), noInvalidDate: true }));
  });

  test('what no column can hold, or a value of another type, is refused in the node', () => {
    expect(() => binaryArray('bigint', [int64Max + 1n], (v) => v)).toThrow(RangeError);
    // What Number() or a write would quietly turn into something else.
    expect(() => binaryArray('bigint', [''], (v) => v as unknown as bigint)).toThrow(TypeError);
    expect(() => binaryArray('bigint', [true], (v) => v as unknown as bigint)).toThrow(TypeError);
    expect(() => binaryArray('text', [12], (v) => v as unknown as string)).toThrow(TypeError);
    expect(() => binaryArray('timestamptz', ['2026-11-27'], (v) => v as unknown as Date)).toThrow(TypeError);
    expect(() => binaryArray('bytea', ['00'], (v) => v as unknown as Buffer)).toThrow(TypeError);
    expect(() => binaryArray('bigint', [int64Min - 1n], (v) => v)).toThrow(RangeError);
    expect(() => binaryArray('timestamptz', [new Date(Number.NaN)], (v) => v)).toThrow(/invalid Date/);
    // Stricter than uuid_in, which also reads the forms without hyphens or in braces: the
    // settlement statements only carry UETRs, which validation holds to the canonical form.
    for (const uuid of ['', 'not-a-uuid', '3f2504e04f8941d39a0c0305e82c3301', '3f2504e0-4f89-41d3-9a0c-0305e82c330g', '{3f2504e0-4f89-41d3-9a0c-0305e82c3301}']) {
      expect(() => binaryArray('uuid', [uuid], (v) => v), uuid).toThrow(/uuid/);
    }
  });

  test('what Postgres refuses as text it refuses in binary: a NUL in text, another element type', async () => {
    const nul = ['a\u0000b'];
    const asTextError = await connection.query({ text: 'SELECT $1::text[]', values: [nul] }).catch((e: { code?: string }) => e.code);
    const asBinaryError = await connection
      .query({ text: 'SELECT $1::text[]', values: [binaryArray('text', nul, (v) => v)] })
      .catch((e: { code?: string }) => e.code);
    expect(asBinaryError).toBe('22021'); // character_not_in_repertoire
    expect(asBinaryError).toBe(asTextError);
    // array_recv checks the element type the array says it holds against the cast's.
    const wrongType = await connection
      .query({ text: 'SELECT $1::bigint[]', values: [binaryArray('text', ['1'], (v) => v)] })
      .catch((e: { code?: string }) => e.code);
    expect(wrongType).toBe('42804'); // datatype_mismatch
  });
});
