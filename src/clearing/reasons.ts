// ISO 20022 external status reason codes the node uses, each with the sentence
// a bank's operator reads. Codes are from the ExternalStatusReason1Code list.

export const reasons = {
  AM04: 'Insufficient funds: the amount exceeds the debtor agent\'s available position.',
  AM02: 'The amount exceeds the largest amount this node settles in one transfer.',
  AM02_CREDITOR_LIMIT: 'The creditor agent\'s position cannot take this amount: it would exceed 2^63-1 minor units.',
  RC01_CREDITOR: 'The creditor agent is not a participant of this clearing node.',
  RC01_INTERMEDIARY: 'The intermediary agent is not a cross-border gateway participant of this clearing node.',
  AG01_DEBTOR: 'The debtor agent is suspended from the scheme.',
  AG01_CREDITOR: 'The creditor agent is suspended from the scheme.',
  AG01_INTERMEDIARY: 'The intermediary agent is suspended from the scheme.',
  AM03_DEBTOR: 'The debtor agent has no position in this currency.',
  AM03_CREDITOR: 'The creditor agent has no position in this currency.',
  DUPL: 'The UETR is already used by another instruction.',
  AB05: 'The creditor agent did not answer before the reservation timed out.',
} as const;

export type ReasonKey = keyof typeof reasons;

/** The ISO code of a reason key (`AG01_DEBTOR` → `AG01`). */
export function reasonCode(key: ReasonKey): string {
  return key.slice(0, 4);
}
