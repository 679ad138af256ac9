// An in-memory model of the clearing node for the property test
// (test/property.test.ts): the positions, transfers and liquidity operations of
// a few banks, decided one operation at a time by the rules src/clearing/batch.ts
// documents. It is written from those rules, not from the code: no import from
// src/clearing, so a wrong rule in the server cannot hide in the model.
//
// What it models: banks that settle one currency and accept automatically (so
// nothing is ever RESERVED), an optional debit cap, suspension, the per-transfer
// maximum, UETR duplicates, instruction and request id replays. Pure: no gRPC,
// no Postgres; `clone()` lets the test try every order of a concurrent group.

export const int64Max = 2n ** 63n - 1n;

/** What one call answered, in a shape both the model and the gRPC answer reduce to. */
export type Outcome =
  | { kind: 'transfer'; uetr: string; status: 'SETTLED' | 'REJECTED'; reasonCode: string; replayed: boolean }
  | {
      kind: 'position';
      balanceMinor: bigint;
      reservedMinor: bigint;
      debitCapMinor: bigint;
      availableMinor: bigint;
      replayed: boolean;
    }
  | { kind: 'error'; code: string; reason: string };

/** A credit transfer instruction as the model needs it; `content` tells a replay from a reuse. */
export interface Instruction {
  debtorAgent: string;
  instructionId: string;
  uetr: string;
  creditorAgent: string;
  currency: string;
  amountMinor: bigint;
  /** Every field of the instruction as sent, in one string: equal content ⇔ equal string. */
  content: string;
}

export type LiquidityKind = 'FUND' | 'DEFUND' | 'SET_DEBIT_CAP';

export interface LiquidityRequest {
  requestId: string;
  kind: LiquidityKind;
  bic: string;
  currency: string;
  /** FUND/DEFUND: the amount moved; SET_DEBIT_CAP: the new cap. */
  amountMinor: bigint;
}

export interface PositionModel {
  balanceMinor: bigint;
  debitCapMinor: bigint;
}

export interface BankModel {
  bic: string;
  active: boolean;
  position: PositionModel;
}

export interface StoredTransfer {
  instruction: Instruction;
  status: 'SETTLED' | 'REJECTED';
  reasonCode: string;
}

interface StoredLiquidity {
  request: LiquidityRequest;
  after: PositionModel;
}

export interface ModelRules {
  /** The node's CLEARING_TRANSFER_AMOUNT_MAX_MINOR. */
  transferAmountMaxMinor: bigint;
  /** The one currency every modelled bank settles in. */
  currency: string;
}

export function availableOf(p: PositionModel): bigint {
  // Reserved is always 0 here: every creditor accepts automatically.
  return p.balanceMinor + p.debitCapMinor;
}

export function positionOutcome(p: PositionModel, replayed: boolean): Outcome {
  return {
    kind: 'position',
    balanceMinor: p.balanceMinor,
    reservedMinor: 0n,
    debitCapMinor: p.debitCapMinor,
    availableMinor: availableOf(p),
    replayed,
  };
}

const instructionKey = (debtorAgent: string, instructionId: string) => `${debtorAgent}\u0000${instructionId}`;

export class ClearingModel {
  readonly banks = new Map<string, BankModel>();
  /** Stored transfers by (debtor agent, instruction id), in the order they were stored. */
  readonly transfers = new Map<string, StoredTransfer>();
  /** UETRs of stored transfers other than DUPL rejections: a new instruction carrying one is DUPL. */
  readonly uetrsInUse = new Set<string>();
  /** Stored liquidity operations by request id (refused ones are not stored). */
  readonly liquidity = new Map<string, StoredLiquidity>();
  fundedMinor = 0n;
  defundedMinor = 0n;
  /** Σ amounts of settled transfers: with funded and defunded, what the journal's debit total must be. */
  settledMinor = 0n;

  constructor(readonly rules: ModelRules) {}

  clone(): ClearingModel {
    return new ClearingModel(this.rules).become(this);
  }

  /** Takes over the whole state of `other` (a clone that went down one order of a concurrent group). */
  become(other: ClearingModel): this {
    if (other === this) return this;
    this.banks.clear();
    for (const [bic, b] of other.banks) this.banks.set(bic, { bic, active: b.active, position: { ...b.position } });
    this.transfers.clear();
    for (const [key, t] of other.transfers) this.transfers.set(key, t);
    this.uetrsInUse.clear();
    for (const u of other.uetrsInUse) this.uetrsInUse.add(u);
    this.liquidity.clear();
    for (const [id, l] of other.liquidity) this.liquidity.set(id, l);
    this.fundedMinor = other.fundedMinor;
    this.defundedMinor = other.defundedMinor;
    this.settledMinor = other.settledMinor;
    return this;
  }

  addBank(bic: string): void {
    if (this.banks.has(bic)) throw new Error(`model: bank ${bic} added twice`);
    this.banks.set(bic, { bic, active: true, position: { balanceMinor: 0n, debitCapMinor: 0n } });
  }

  bank(bic: string): BankModel {
    const b = this.banks.get(bic);
    if (b === undefined) throw new Error(`model: no bank ${bic}`);
    return b;
  }

  setActive(bic: string, active: boolean): void {
    this.bank(bic).active = active;
  }

  /** The stored transfer an instruction id names, if any. */
  storedTransfer(debtorAgent: string, instructionId: string): StoredTransfer | undefined {
    return this.transfers.get(instructionKey(debtorAgent, instructionId));
  }

  /**
   * One credit transfer, decided against the current state, in the order of checks
   * of the node: replay / reuse, then DUPL, AM02 (per-transfer maximum), RC01, AG01
   * (debtor, then creditor), AM03 (debtor, then creditor), AM04, AM02 (the
   * creditor's position would pass 2^63−1); otherwise it settles.
   *
   * "Would pass 2^63−1" is balance + debit cap, not the balance alone: that is the
   * limit the node applies to funding and debit caps (POSITION_LIMIT) and the one
   * its database enforces (available = balance + cap − reserved is a bigint).
   */
  submitTransfer(i: Instruction): Outcome {
    const key = instructionKey(i.debtorAgent, i.instructionId);
    const known = this.transfers.get(key);
    if (known !== undefined) {
      if (known.instruction.content === i.content) {
        return { kind: 'transfer', uetr: known.instruction.uetr, status: known.status, reasonCode: known.reasonCode, replayed: true };
      }
      return { kind: 'error', code: 'ALREADY_EXISTS', reason: 'INSTRUCTION_ID_REUSED' };
    }
    const debtor = this.bank(i.debtorAgent);
    const creditor = this.banks.get(i.creditorAgent);
    // Every modelled bank settles only the model's currency.
    const hasPosition = i.currency === this.rules.currency;
    let reasonCode = '';
    if (this.uetrsInUse.has(i.uetr)) reasonCode = 'DUPL';
    else if (i.amountMinor > this.rules.transferAmountMaxMinor) reasonCode = 'AM02';
    else if (creditor === undefined) reasonCode = 'RC01';
    else if (!debtor.active || !creditor.active) reasonCode = 'AG01';
    else if (!hasPosition) reasonCode = 'AM03';
    else if (availableOf(debtor.position) < i.amountMinor) reasonCode = 'AM04';
    else if (creditor.position.balanceMinor + creditor.position.debitCapMinor > int64Max - i.amountMinor) reasonCode = 'AM02';

    const status = reasonCode === '' ? 'SETTLED' : 'REJECTED';
    if (status === 'SETTLED') {
      const to = (creditor as BankModel).position;
      debtor.position.balanceMinor -= i.amountMinor;
      to.balanceMinor += i.amountMinor;
      this.settledMinor += i.amountMinor;
      if (availableOf(debtor.position) < 0n) throw new Error(`model: ${debtor.bic} available went negative`);
    }
    this.transfers.set(key, { instruction: i, status, reasonCode });
    if (reasonCode !== 'DUPL') this.uetrsInUse.add(i.uetr);
    return { kind: 'transfer', uetr: i.uetr, status, reasonCode, replayed: false };
  }

  /**
   * Fund, defund or set the debit cap. A refused operation (position limit,
   * available would go negative) is an error and is not stored, so its request id
   * stays free; a stored one answers its replays with the position it left.
   */
  changePosition(r: LiquidityRequest): Outcome {
    const known = this.liquidity.get(r.requestId);
    if (known !== undefined) {
      const same =
        known.request.kind === r.kind &&
        known.request.bic === r.bic &&
        known.request.currency === r.currency &&
        known.request.amountMinor === r.amountMinor;
      if (same) return positionOutcome(known.after, true);
      return { kind: 'error', code: 'ALREADY_EXISTS', reason: 'REQUEST_ID_REUSED' };
    }
    const bank = this.bank(r.bic);
    if (r.currency !== this.rules.currency) return { kind: 'error', code: 'FAILED_PRECONDITION', reason: 'NO_POSITION' };
    const next = { ...bank.position };
    if (r.kind === 'FUND') next.balanceMinor += r.amountMinor;
    else if (r.kind === 'DEFUND') next.balanceMinor -= r.amountMinor;
    else next.debitCapMinor = r.amountMinor;
    if (next.balanceMinor > int64Max || next.balanceMinor + next.debitCapMinor > int64Max) {
      return { kind: 'error', code: 'FAILED_PRECONDITION', reason: 'POSITION_LIMIT' };
    }
    if (availableOf(next) < 0n) return { kind: 'error', code: 'FAILED_PRECONDITION', reason: 'INSUFFICIENT_AVAILABLE' };
    bank.position = next;
    if (r.kind === 'FUND') this.fundedMinor += r.amountMinor;
    if (r.kind === 'DEFUND') this.defundedMinor += r.amountMinor;
    this.liquidity.set(r.requestId, { request: r, after: { ...next } });
    return positionOutcome(next, false);
  }

  /** Σ balances of the modelled banks: must equal funded − defunded (conservation). */
  balanceTotalMinor(): bigint {
    let total = 0n;
    for (const b of this.banks.values()) total += b.position.balanceMinor;
    return total;
  }
}
