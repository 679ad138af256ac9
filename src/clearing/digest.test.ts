// The request digest is stored with every transfer and compared with the
// digest of a retried instruction to tell a replay from a reuse of its id, so
// it must never change for the same content, across versions of the node.
import { createHash } from 'node:crypto';
import { describe, expect, test } from 'vitest';
import type { TransferInstruction } from './batch.js';
import { transferDigest } from './core.js';

const base: TransferInstruction = {
  instructionId: 'INSTR-1',
  endToEndId: 'E2E-1',
  uetr: 'AB0C5F3E-9D1B-4C2A-8E7F-1234567890AB',
  debtorAgent: 'BANKDEFFXXX',
  creditorAgent: 'BANKFRPPXXX',
  intermediaryAgent: '',
  currency: 'EUR',
  amountMinor: 9_223_372_036_854_775_807n,
  debtorName: 'Zoë Ångström',
  debtorIban: 'DE89370400440532013000',
  creditorName: '渡辺',
  creditorIban: 'FR1420041010050500013M02606',
  remittanceInformation: 'invoice 7',
};

/** The digest as first released: each part fed to the hash on its own, NUL after each. */
function digestAsFirstReleased(t: TransferInstruction): Buffer {
  const hash = createHash('sha256');
  for (const part of [
    t.instructionId, t.endToEndId, t.uetr.toLowerCase(), t.debtorAgent, t.creditorAgent, t.intermediaryAgent,
    t.currency, t.amountMinor.toString(), t.debtorName, t.debtorIban, t.creditorName, t.creditorIban,
    t.remittanceInformation,
  ]) {
    hash.update(part).update('\u0000');
  }
  return hash.digest();
}

describe('transferDigest', () => {
  test('is the digest stored by earlier versions', () => {
    expect(transferDigest(base).toString('hex')).toBe(
      'd22db64e9f2b4f7bdb668f8e7a623d795f6c4ac31103d5d9149a1d122b9b60ce',
    );
    expect(transferDigest(base)).toEqual(digestAsFirstReleased(base));
  });

  test.each([
    ['amount', { amountMinor: 1n }],
    ['UETR case is ignored', { uetr: base.uetr.toLowerCase() }],
    ['empty remittance', { remittanceInformation: '' }],
    ['intermediary', { intermediaryAgent: 'GATEUS33XXX' }],
    ['a separator moved between fields', { debtorName: 'Zoë', debtorIban: 'Ångström' }],
  ])('matches the first release with %s', (_name, change) => {
    const t = { ...base, ...change };
    expect(transferDigest(t)).toEqual(digestAsFirstReleased(t));
  });

  test('the UETR is compared case-insensitively', () => {
    expect(transferDigest({ ...base, uetr: base.uetr.toLowerCase() })).toEqual(transferDigest({ ...base, uetr: base.uetr.toUpperCase() }));
  });

  test('matches the first release with characters outside the basic plane and a lone surrogate', () => {
    for (const debtorName of ['Zahlung 💶 an 🏦', 'broken \ud83d half']) {
      const t = { ...base, debtorName };
      expect(transferDigest(t)).toEqual(digestAsFirstReleased(t));
    }
  });

  test('tells fields apart: moving text across a separator changes the digest', () => {
    const a = transferDigest({ ...base, debtorName: 'AB', debtorIban: 'C' });
    const b = transferDigest({ ...base, debtorName: 'A', debtorIban: 'BC' });
    expect(a).not.toEqual(b);
  });
});
