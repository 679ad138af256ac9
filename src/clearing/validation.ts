/**
 * Validation of incoming requests, before anything is stored.
 *
 * A malformed request is not a domain outcome: it is refused with INVALID_ARGUMENT and
 * a list of field violations, and nothing is recorded. So these functions never throw
 * for bad input; they return every violation they find, in proto field order, so that
 * the caller can fix all of them in one round trip. They throw only on programmer
 * errors (an empty field path), which no client can cause.
 *
 * Abbreviations (ISO, defined once):
 * - BIC: Business Identifier Code of a bank, ISO 9362.
 * - IBAN: International Bank Account Number, ISO 13616.
 * - UETR: Unique End-to-end Transaction Reference, a UUID version 4 (SWIFT gpi).
 *
 * Field paths use the proto snake_case field names joined with dots, as
 * `google.rpc.BadRequest.FieldViolation.field` expects (AIP-193).
 *
 * Descriptions never echo personal data (names, IBANs): violations end up in error
 * responses and logs.
 *
 * This module is pure: no I/O, no `pg`, no `grpc`.
 */
import type { Money } from "../gen/clearing/v1/money.js";
import type { CreditTransfer, Party } from "../gen/clearing/v1/transfer.js";

/** One invalid field of a request, as in `google.rpc.BadRequest.FieldViolation`. */
export interface FieldViolation {
  /** The path to the field, e.g. `transfers[3].amount.amount_minor`. */
  field: string;
  /** One short human sentence saying what is wrong; never personal data. */
  description: string;
}

/** Length limits, counted in Unicode code points (ISO 20022 Max35Text, Max140Text). */
export const limits = {
  /** Instruction id and end-to-end id (ISO 20022 Max35Text). */
  idLengthMax: 35,
  /** Party names and remittance information (ISO 20022 Max140Text). */
  textLengthMax: 140,
} as const;

/** The largest value of a proto `int64`: amounts above it cannot be stored. */
const amountMinorMax = 2n ** 63n - 1n;

/** IBAN total length bounds over all countries (ISO 13616). */
const ibanLengthMin = 15;
const ibanLengthMax = 34;

/**
 * IBAN lengths of the countries our participants bank in most. A country not listed
 * here is checked only against the general rules and the checksum.
 */
const ibanLengthByCountry: ReadonlyMap<string, number> = new Map([
  ["AT", 20],
  ["BE", 16],
  ["CH", 21],
  ["DE", 22],
  ["ES", 24],
  ["FI", 18],
  ["FR", 27],
  ["GB", 22],
  ["IE", 22],
  ["IT", 27],
  ["LU", 20],
  ["NL", 18],
  ["PT", 25],
]);

// Bank code (4 letters), country (2 letters), location (2 alnum), optional branch (3 alnum).
const bicPattern = /^[A-Z]{4}[A-Z]{2}[A-Z0-9]{2}(?:[A-Z0-9]{3})?$/;
// Country (2 letters), check digits (2 digits), then the national account number (BBAN).
const ibanPattern = /^[A-Z]{2}[0-9]{2}[A-Z0-9]+$/;
// Version nibble 4; variant bits 10xx, so the first hex digit of the fourth group is 8, 9, a or b.
const uetrPattern = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/i;
const currencyPattern = /^[A-Z]{3}$/;
// C0 controls, DEL and C1 controls. NUL in particular cannot be stored in a Postgres text column.
const controlCharacterPattern = /\p{Cc}/u;

/** True for an ISO 9362 BIC: 8 or 11 characters, upper case only. */
export function isValidBic(bic: string): boolean {
  return typeof bic === "string" && bicPattern.test(bic);
}

/**
 * True for an ISO 13616 IBAN in electronic form: upper case, no spaces, the country's
 * length when we know it, and a mod-97 checksum of 1.
 */
export function isValidIban(iban: string): boolean {
  return ibanProblem(iban) === undefined;
}

/** True for a UETR: a UUID version 4 in canonical 8-4-4-4-12 form, either case. */
export function isValidUetr(uetr: string): boolean {
  return typeof uetr === "string" && uetrPattern.test(uetr);
}

/** True for an ISO 4217 alphabetic code: exactly three upper-case ASCII letters. */
export function isValidCurrency(code: string): boolean {
  return typeof code === "string" && currencyPattern.test(code);
}

// Field paths are built only for a violation: a well-formed transfer, the
// usual case, allocates none of its dozen paths (`transfers[3].debtor.iban`).
// An allocation profile of the benchmark's node put ~1.1 kB per transfer here
// when every path was built up front.

/** `prefix.name.leaf`, with `name` and `leaf` optional. */
function path(prefix: string, name?: string, leaf?: string): string {
  const head = name === undefined ? prefix : `${prefix}.${name}`;
  return leaf === undefined ? head : `${head}.${leaf}`;
}

/** What is wrong with a required BIC, or undefined. */
function bicProblem(bic: string): string | undefined {
  if (isAbsent(bic)) return "is required";
  if (!isValidBic(bic)) return "must be a BIC (ISO 9362) of 8 or 11 upper-case letters and digits";
  return undefined;
}

/**
 * Validates a BIC field that is required: one violation when it is empty or malformed,
 * none otherwise.
 */
export function validateBicField(bic: string, field: string): FieldViolation[] {
  assertFieldPath(field);
  const problem = bicProblem(bic);
  return problem === undefined ? [] : [{ field, description: problem }];
}

/**
 * Validates an amount of money at `field`. A positive amount is always valid; zero only
 * with `allowZero`; a negative amount never.
 */
export function validateMoney(
  m: Money | undefined,
  field: string,
  opts: { allowZero: boolean },
): FieldViolation[] {
  assertFieldPath(field);
  const violations: FieldViolation[] = [];
  checkMoney(violations, m, field, undefined, opts.allowZero);
  assertViolationsUnder(violations, field);
  return violations;
}

/** Appends the violations of the money at `path(prefix, name)`. */
function checkMoney(out: FieldViolation[], m: Money | undefined, prefix: string, name: string | undefined, allowZero: boolean): void {
  if (m === undefined) {
    out.push({ field: path(prefix, name), description: "is required" });
    return;
  }
  if (isAbsent(m.currency)) {
    out.push({ field: path(prefix, name, "currency"), description: "is required" });
  } else if (!isValidCurrency(m.currency)) {
    out.push({ field: path(prefix, name, "currency"), description: "must be an ISO 4217 code of three upper-case letters" });
  }

  // The type says bigint, but a caller building the message by hand in JavaScript could
  // put a number there; a float must never reach the ledger.
  const amountMinor: unknown = m.amountMinor;
  if (typeof amountMinor !== "bigint") {
    out.push({ field: path(prefix, name, "amount_minor"), description: "must be an integer number of minor units" });
  } else if (amountMinor > amountMinorMax) {
    // Cannot come from a decoded int64; checked so that the SQL bigint column never overflows.
    out.push({ field: path(prefix, name, "amount_minor"), description: `must be at most ${amountMinorMax} minor units` });
  } else if (amountMinor < (allowZero ? 0n : 1n)) {
    out.push({
      field: path(prefix, name, "amount_minor"),
      description: allowZero ? "must not be negative" : "must be greater than zero",
    });
  }
}

/** Instruction and end-to-end ids: required, ISO 20022 Max35Text. */
const idRule = { required: true, lengthMax: limits.idLengthMax } as const;
/** Party names: required, Max140Text. */
const nameRule = { required: true, lengthMax: limits.textLengthMax } as const;
/** Remittance information: optional, Max140Text. */
const remittanceRule = { required: false, lengthMax: limits.textLengthMax } as const;

/**
 * Validates a credit transfer whose fields sit under `fieldPrefix` (`transfer`,
 * `transfers[3]`). Returns every violation found, in proto field order; an empty list
 * means the transfer is well-formed. Business rules that need state (participants,
 * balances, duplicates) are not checked here.
 */
export function validateCreditTransfer(t: CreditTransfer | undefined, fieldPrefix: string): FieldViolation[] {
  assertFieldPath(fieldPrefix);
  if (t === undefined) return [{ field: fieldPrefix, description: "is required" }];

  const violations: FieldViolation[] = [];

  checkText(violations, t.instructionId, idRule, fieldPrefix, "instruction_id");
  checkText(violations, t.endToEndId, idRule, fieldPrefix, "end_to_end_id");

  if (isAbsent(t.uetr)) {
    violations.push({ field: path(fieldPrefix, "uetr"), description: "is required" });
  } else if (!isValidUetr(t.uetr)) {
    violations.push({ field: path(fieldPrefix, "uetr"), description: "must be a UUID version 4 in canonical 8-4-4-4-12 form" });
  }

  const debtorAgentProblem = bicProblem(t.debtorAgent);
  if (debtorAgentProblem !== undefined) violations.push({ field: path(fieldPrefix, "debtor_agent"), description: debtorAgentProblem });
  const creditorAgentProblem = bicProblem(t.creditorAgent);
  if (creditorAgentProblem !== undefined) violations.push({ field: path(fieldPrefix, "creditor_agent"), description: creditorAgentProblem });
  // Compared only when both are valid, so that a malformed agent is not reported twice.
  // Full strings are compared on purpose: a head office and its branch (DEUTDEFF and
  // DEUTDEFF500) have different BICs and may be different participants.
  if (debtorAgentProblem === undefined && creditorAgentProblem === undefined && t.debtorAgent === t.creditorAgent) {
    violations.push({ field: path(fieldPrefix, "creditor_agent"), description: "must differ from debtor_agent" });
  }
  if (!isAbsent(t.intermediaryAgent)) {
    const problem = bicProblem(t.intermediaryAgent);
    if (problem !== undefined) violations.push({ field: path(fieldPrefix, "intermediary_agent"), description: problem });
  }

  checkMoney(violations, t.amount, fieldPrefix, "amount", false);
  checkParty(violations, t.debtor, fieldPrefix, "debtor");
  checkParty(violations, t.creditor, fieldPrefix, "creditor");
  checkText(violations, t.remittanceInformation, remittanceRule, fieldPrefix, "remittance_information");

  if (!isAbsent(t.paymentRequestId)) {
    violations.push({
      field: path(fieldPrefix, "payment_request_id"),
      description: "must be empty: quick payment is not supported by this node version",
    });
  }

  assertViolationsUnder(violations, fieldPrefix);
  return violations;
}

/** Appends the violations of the party (name and IBAN) at `prefix.name`. */
function checkParty(out: FieldViolation[], party: Party | undefined, prefix: string, name: string): void {
  if (party === undefined) {
    out.push({ field: path(prefix, name), description: "is required" });
    return;
  }
  checkText(out, party.name, nameRule, prefix, name, "name");
  if (isAbsent(party.iban)) {
    out.push({ field: path(prefix, name, "iban"), description: "is required" });
  } else {
    const problem = ibanProblem(party.iban);
    if (problem !== undefined) out.push({ field: path(prefix, name, "iban"), description: problem });
  }
}

/**
 * Free text and ids at `path(prefix, name, leaf)`: a length limit in code points, and no
 * control characters. Appends its violations to `out`.
 */
function checkText(
  out: FieldViolation[],
  text: string,
  rule: { required: boolean; lengthMax: number },
  prefix: string,
  name: string,
  leaf?: string,
): void {
  if (isAbsent(text)) {
    if (rule.required) out.push({ field: path(prefix, name, leaf), description: "is required" });
    return;
  }
  if (codePointLengthExceeds(text, rule.lengthMax)) {
    out.push({ field: path(prefix, name, leaf), description: `must be at most ${rule.lengthMax} characters` });
  }
  if (controlCharacterPattern.test(text)) {
    out.push({ field: path(prefix, name, leaf), description: "must not contain control characters" });
  }
}

/**
 * Says what is wrong with an IBAN, without quoting it (it is personal data), or
 * returns undefined when it is valid.
 */
function ibanProblem(iban: string): string | undefined {
  if (typeof iban !== "string") return "must be an IBAN";
  // Checked first: it bounds the checksum loop below.
  if (iban.length < ibanLengthMin || iban.length > ibanLengthMax) {
    return `must be an IBAN of ${ibanLengthMin} to ${ibanLengthMax} characters`;
  }
  if (!ibanPattern.test(iban)) {
    return "must be an IBAN in upper-case letters and digits without spaces";
  }
  const lengthExpected = ibanLengthByCountry.get(iban.slice(0, 2));
  if (lengthExpected !== undefined && iban.length !== lengthExpected) {
    return `must be an IBAN of ${lengthExpected} characters for its country`;
  }
  // Check digits are 98 minus a remainder mod 97, so 02..98. Without this, 00, 01 and
  // 99 would pass the checksum wherever 97, 98 and 02 do.
  // Two ASCII digits (ibanPattern): read off their codes rather than a substring.
  const checkDigits = (iban.charCodeAt(2) - 0x30) * 10 + (iban.charCodeAt(3) - 0x30);
  if (checkDigits < 2 || checkDigits > 98 || ibanMod97(iban) !== 1) {
    return "must be an IBAN with valid check digits";
  }
  return undefined;
}

/**
 * The ISO 7064 mod-97-10 remainder of an IBAN: the first four characters moved to the
 * end, letters replaced by 10..35, the result read as one decimal number. Computed one
 * character at a time so that every intermediate value stays below 97 * 100 + 35,
 * exact in a double; no bigint or float rounding is involved.
 */
function ibanMod97(iban: string): number {
  assert(iban.length <= ibanLengthMax, "IBAN length is checked before the checksum");
  const length = iban.length;
  let remainder = 0;
  // The rearranged string read in place: positions 4.., then 0..3.
  for (let step = 0; step < length; step += 1) {
    const code = iban.charCodeAt((step + 4) % length);
    if (code >= 0x30 && code <= 0x39) {
      remainder = (remainder * 10 + (code - 0x30)) % 97;
    } else {
      assert(code >= 0x41 && code <= 0x5a, "IBAN characters are checked before the checksum");
      remainder = (remainder * 100 + (code - 0x41 + 10)) % 97;
    }
  }
  assert(remainder >= 0 && remainder < 97, "a remainder mod 97 lies in 0..96");
  return remainder;
}

/**
 * True when `text` has more than `lengthMax` Unicode code points. Stops counting as
 * soon as the answer is known, so a huge string costs at most 2 * lengthMax steps.
 */
function codePointLengthExceeds(text: string, lengthMax: number): boolean {
  // A code point takes one or two UTF-16 units, which bounds the count from both sides.
  if (text.length <= lengthMax) return false;
  if (text.length > 2 * lengthMax) return true;
  let count = 0;
  for (const _codePoint of text) {
    count += 1;
    if (count > lengthMax) return true;
  }
  return false;
}

/**
 * Proto3 strings are empty when unset. A message built by hand in JavaScript may lack
 * the field altogether; that is treated as unset too, rather than crashing.
 */
function isAbsent(value: string): boolean {
  return typeof value !== "string" || value.length === 0;
}

function assertFieldPath(field: string): void {
  assert(typeof field === "string" && field.length > 0, "a field path must not be empty");
}

function assertViolationsUnder(violations: readonly FieldViolation[], field: string): void {
  for (const violation of violations) {
    assert(
      violation.field === field || violation.field.startsWith(`${field}.`),
      "every violation lies under the validated field",
    );
    assert(violation.description.length > 0, "every violation has a description");
  }
}

function assert(condition: boolean, message: string): asserts condition {
  if (!condition) throw new Error(`validation invariant broken: ${message}`);
}
