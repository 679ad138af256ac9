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

/**
 * Validates a BIC field that is required: one violation when it is empty or malformed,
 * none otherwise.
 */
export function validateBicField(bic: string, field: string): FieldViolation[] {
  assertFieldPath(field);
  if (isAbsent(bic)) return [{ field, description: "is required" }];
  if (!isValidBic(bic)) {
    return [{ field, description: "must be a BIC (ISO 9362) of 8 or 11 upper-case letters and digits" }];
  }
  return [];
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
  if (m === undefined) return [{ field, description: "is required" }];

  const violations: FieldViolation[] = [];
  const currencyField = `${field}.currency`;
  if (isAbsent(m.currency)) {
    violations.push({ field: currencyField, description: "is required" });
  } else if (!isValidCurrency(m.currency)) {
    violations.push({ field: currencyField, description: "must be an ISO 4217 code of three upper-case letters" });
  }

  const amountField = `${field}.amount_minor`;
  // The type says bigint, but a caller building the message by hand in JavaScript could
  // put a number there; a float must never reach the ledger.
  const amountMinor: unknown = m.amountMinor;
  const amountMinorMin = opts.allowZero ? 0n : 1n;
  if (typeof amountMinor !== "bigint") {
    violations.push({ field: amountField, description: "must be an integer number of minor units" });
  } else if (amountMinor > amountMinorMax) {
    // Cannot come from a decoded int64; checked so that the SQL bigint column never overflows.
    violations.push({ field: amountField, description: `must be at most ${amountMinorMax} minor units` });
  } else if (amountMinor < amountMinorMin) {
    violations.push({
      field: amountField,
      description: opts.allowZero ? "must not be negative" : "must be greater than zero",
    });
  }

  assertViolationsUnder(violations, field);
  return violations;
}

/**
 * Validates a credit transfer whose fields sit under `fieldPrefix` (`transfer`,
 * `transfers[3]`). Returns every violation found, in proto field order; an empty list
 * means the transfer is well-formed. Business rules that need state (participants,
 * balances, duplicates) are not checked here.
 */
export function validateCreditTransfer(t: CreditTransfer | undefined, fieldPrefix: string): FieldViolation[] {
  assertFieldPath(fieldPrefix);
  if (t === undefined) return [{ field: fieldPrefix, description: "is required" }];

  const at = (name: string): string => `${fieldPrefix}.${name}`;
  const violations: FieldViolation[] = [];

  violations.push(...validateText(t.instructionId, at("instruction_id"), { required: true, lengthMax: limits.idLengthMax }));
  violations.push(...validateText(t.endToEndId, at("end_to_end_id"), { required: true, lengthMax: limits.idLengthMax }));

  if (isAbsent(t.uetr)) {
    violations.push({ field: at("uetr"), description: "is required" });
  } else if (!isValidUetr(t.uetr)) {
    violations.push({ field: at("uetr"), description: "must be a UUID version 4 in canonical 8-4-4-4-12 form" });
  }

  const debtorAgentViolations = validateBicField(t.debtorAgent, at("debtor_agent"));
  const creditorAgentViolations = validateBicField(t.creditorAgent, at("creditor_agent"));
  violations.push(...debtorAgentViolations, ...creditorAgentViolations);
  // Compared only when both are valid, so that a malformed agent is not reported twice.
  // Full strings are compared on purpose: a head office and its branch (DEUTDEFF and
  // DEUTDEFF500) have different BICs and may be different participants.
  if (debtorAgentViolations.length === 0 && creditorAgentViolations.length === 0 && t.debtorAgent === t.creditorAgent) {
    violations.push({ field: at("creditor_agent"), description: "must differ from debtor_agent" });
  }
  if (!isAbsent(t.intermediaryAgent)) {
    violations.push(...validateBicField(t.intermediaryAgent, at("intermediary_agent")));
  }

  violations.push(...validateMoney(t.amount, at("amount"), { allowZero: false }));
  violations.push(...validateParty(t.debtor, at("debtor")));
  violations.push(...validateParty(t.creditor, at("creditor")));
  violations.push(
    ...validateText(t.remittanceInformation, at("remittance_information"), {
      required: false,
      lengthMax: limits.textLengthMax,
    }),
  );

  if (!isAbsent(t.paymentRequestId)) {
    violations.push({
      field: at("payment_request_id"),
      description: "must be empty: quick payment is not supported by this node version",
    });
  }

  assertViolationsUnder(violations, fieldPrefix);
  return violations;
}

function validateParty(party: Party | undefined, field: string): FieldViolation[] {
  if (party === undefined) return [{ field, description: "is required" }];

  const violations = validateText(party.name, `${field}.name`, { required: true, lengthMax: limits.textLengthMax });
  const ibanField = `${field}.iban`;
  if (isAbsent(party.iban)) {
    violations.push({ field: ibanField, description: "is required" });
  } else {
    const problem = ibanProblem(party.iban);
    if (problem !== undefined) violations.push({ field: ibanField, description: problem });
  }
  return violations;
}

/** Free text and ids: a length limit in code points, and no control characters. */
function validateText(
  text: string,
  field: string,
  rule: { required: boolean; lengthMax: number },
): FieldViolation[] {
  if (isAbsent(text)) return rule.required ? [{ field, description: "is required" }] : [];
  const violations: FieldViolation[] = [];
  if (codePointLengthExceeds(text, rule.lengthMax)) {
    violations.push({ field, description: `must be at most ${rule.lengthMax} characters` });
  }
  if (controlCharacterPattern.test(text)) {
    violations.push({ field, description: "must not contain control characters" });
  }
  return violations;
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
  const checkDigits = Number(iban.slice(2, 4));
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
  const rearranged = iban.slice(4) + iban.slice(0, 4);
  let remainder = 0;
  for (let index = 0; index < rearranged.length; index += 1) {
    const code = rearranged.charCodeAt(index);
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
