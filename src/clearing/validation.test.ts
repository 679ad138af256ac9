import { randomUUID } from "node:crypto";

import fc from "fast-check";
import { describe, expect, test } from "vitest";

import type { CreditTransfer } from "../gen/clearing/v1/transfer.js";
import {
  isValidBic,
  isValidCurrency,
  isValidIban,
  isValidUetr,
  limits,
  validateBicField,
  validateCreditTransfer,
  validateMoney,
} from "./validation.js";

const int64Max = 2n ** 63n - 1n;
const int64Min = -(2n ** 63n);

const debtorIban = "DE89370400440532013000";
const creditorIban = "FR1420041010050500013M02606";
const debtorName = "Erika Mustermann";
const creditorName = "Jean Dupont";

/** A fresh, fully valid transfer; each test mutates its own copy. */
function validTransfer(): CreditTransfer {
  return {
    instructionId: "INSTR-2024-000001",
    endToEndId: "E2E-INVOICE-4711",
    uetr: "eb6305c9-1f7e-4b1a-8b1c-0c4e5c1c2d3e",
    debtorAgent: "DEUTDEFF",
    creditorAgent: "BNPAFRPP",
    intermediaryAgent: "",
    amount: { currency: "EUR", amountMinor: 1234n },
    debtor: { name: debtorName, iban: debtorIban },
    creditor: { name: creditorName, iban: creditorIban },
    remittanceInformation: "Invoice 4711",
    paymentRequestId: "",
  };
}

function fieldsOf(transfer: CreditTransfer | undefined, prefix = "transfer"): string[] {
  return validateCreditTransfer(transfer, prefix).map((violation) => violation.field);
}

describe("isValidIban", () => {
  test.each([
    ["DE89370400440532013000"],
    ["GB82WEST12345698765432"],
    ["FR1420041010050500013M02606"],
    ["NL91ABNA0417164300"],
    ["BE68539007547034"],
    // Norway is not in the per-country table: general rules and checksum only.
    ["NO9386011117947"],
    // The edges of the check digits' range, 02 and 98 (97 too).
    ["DE02370400440532013014"],
    ["DE98370400440532013032"],
    ["DE97370400440532013050"],
  ])("accepts %s", (iban) => {
    expect(isValidIban(iban)).toBe(true);
  });

  test.each([
    ["wrong checksum", "DE88370400440532013000"],
    ["wrong checksum in a letter BBAN", "GB82WEST12345698765433"],
    ["transposed digits", "DE89370400440532031000"],
    // The checksum of these two is right: only the length is wrong.
    ["DE length 23 with a valid checksum", "DE543704004405320130001"],
    ["too short overall with a valid checksum", "NO698601111794"],
    ["too long overall (35)", "MT051234567890123456789012345678901"],
    ["one character short", "DE8937040044053201300"],
    ["lower case", "de89370400440532013000"],
    ["lower case letters in the BBAN", "GB82west12345698765432"],
    ["spaces (paper form)", "DE89 3704 0044 0532 0130 00"],
    ["letters as check digits", "DEAB370400440532013000"],
    ["digits as country", "1289370400440532013000"],
    // 01 passes mod 97 wherever 98 does, but check digits are always 02..98.
    ["check digits 01", "DE01370400440532013032"],
    // Likewise 00 where 97 passes, and 99 where 02 does.
    ["check digits 00", "DE00370400440532013050"],
    ["check digits 99", "DE99370400440532013014"],
    ["punctuation", "DE89-370400440532013000"],
    ["empty", ""],
  ])("rejects %s", (_case, iban) => {
    expect(isValidIban(iban)).toBe(false);
  });

  test("the check-digit fixture above is the twin of a valid IBAN", () => {
    expect(isValidIban("DE98370400440532013032")).toBe(true);
  });
});

describe("isValidBic", () => {
  test.each([["DEUTDEFF"], ["DEUTDEFF500"], ["DEUTDEFFXXX"], ["BNPAFRPP"], ["NEDSZAJJ"], ["MARKDEF1"]])(
    "accepts %s",
    (bic) => {
      expect(isValidBic(bic)).toBe(true);
    },
  );

  test.each([
    ["7 characters", "DEUTDEF"],
    ["9 characters", "DEUTDEFF5"],
    ["10 characters", "DEUTDEFF50"],
    ["12 characters", "DEUTDEFF5000"],
    ["lower case", "deutdeff"],
    ["mixed case", "DeutDEFF"],
    ["digits in bank code", "DEU1DEFF"],
    ["digits in country", "DEUTD1FF"],
    ["trailing space", "DEUTDEFF "],
    ["punctuation", "DEUT-DEFF"],
    ["empty", ""],
  ])("rejects %s", (_case, bic) => {
    expect(isValidBic(bic)).toBe(false);
  });
});

describe("isValidUetr", () => {
  test.each([
    ["lower case v4", "eb6305c9-1f7e-4b1a-8b1c-0c4e5c1c2d3e"],
    ["upper case v4", "EB6305C9-1F7E-4B1A-9B1C-0C4E5C1C2D3E"],
    ["variant a", "eb6305c9-1f7e-4b1a-ab1c-0c4e5c1c2d3e"],
    ["variant b", "eb6305c9-1f7e-4b1a-bb1c-0c4e5c1c2d3e"],
  ])("accepts %s", (_case, uetr) => {
    expect(isValidUetr(uetr)).toBe(true);
  });

  test.each([
    ["version 1", "f47ac10b-58cc-1372-a567-0e02b2c3d479"],
    ["version 7", "01890a5d-ac96-774b-bcce-b302099a8057"],
    ["variant c (Microsoft)", "eb6305c9-1f7e-4b1a-cb1c-0c4e5c1c2d3e"],
    ["variant 7 (NCS)", "eb6305c9-1f7e-4b1a-7b1c-0c4e5c1c2d3e"],
    ["nil UUID", "00000000-0000-0000-0000-000000000000"],
    ["no hyphens", "eb6305c91f7e4b1a8b1c0c4e5c1c2d3e"],
    ["braces", "{eb6305c9-1f7e-4b1a-8b1c-0c4e5c1c2d3e}"],
    ["urn prefix", "urn:uuid:eb6305c9-1f7e-4b1a-8b1c-0c4e5c1c2d3e"],
    ["non-hex digit", "eb6305c9-1f7e-4b1a-8b1c-0c4e5c1c2d3g"],
    ["trailing newline", "eb6305c9-1f7e-4b1a-8b1c-0c4e5c1c2d3e\n"],
    ["garbage", "not-a-uuid"],
    ["empty", ""],
  ])("rejects %s", (_case, uetr) => {
    expect(isValidUetr(uetr)).toBe(false);
  });

  test("accepts every UUID from crypto.randomUUID", () => {
    for (let iteration = 0; iteration < 100; iteration += 1) {
      expect(isValidUetr(randomUUID())).toBe(true);
    }
  });
});

describe("isValidCurrency", () => {
  test.each([
    ["EUR", true],
    ["CHF", true],
    ["eur", false],
    ["EU", false],
    ["EURO", false],
    ["E1R", false],
    ["ÉUR", false],
    ["", false],
  ])("%j is %s", (code, expected) => {
    expect(isValidCurrency(code)).toBe(expected);
  });
});

describe("validateBicField", () => {
  test.each([
    ["DEUTDEFF", []],
    ["", ["is required"]],
    ["deutdeff", ["must be a BIC (ISO 9362) of 8 or 11 upper-case letters and digits"]],
  ])("%j gives %j", (bic, expected) => {
    expect(validateBicField(bic, "participant.bic").map((violation) => violation.description)).toEqual(expected);
  });

  test("reports on the given field", () => {
    expect(validateBicField("", "participant.bic")).toEqual([{ field: "participant.bic", description: "is required" }]);
  });
});

describe("validateMoney", () => {
  test.each([
    ["positive, zero refused", { currency: "EUR", amountMinor: 1n }, false, []],
    ["zero, zero refused", { currency: "EUR", amountMinor: 0n }, false, ["limit.amount_minor"]],
    ["zero, zero allowed", { currency: "EUR", amountMinor: 0n }, true, []],
    ["negative, zero allowed", { currency: "EUR", amountMinor: -1n }, true, ["limit.amount_minor"]],
    ["int64 max", { currency: "EUR", amountMinor: int64Max }, false, []],
    ["above int64 max", { currency: "EUR", amountMinor: int64Max + 1n }, false, ["limit.amount_minor"]],
    ["missing currency", { currency: "", amountMinor: 1n }, false, ["limit.currency"]],
    ["both wrong", { currency: "eur", amountMinor: -5n }, false, ["limit.currency", "limit.amount_minor"]],
    ["missing", undefined, false, ["limit"]],
  ])("%s", (_case, money, allowZero, expected) => {
    expect(validateMoney(money, "limit", { allowZero }).map((violation) => violation.field)).toEqual(expected);
  });

  test("a number smuggled in from JavaScript is refused, never used as money", () => {
    const money = { currency: "EUR", amountMinor: 12.34 as unknown as bigint };
    expect(validateMoney(money, "amount", { allowZero: false })).toEqual([
      { field: "amount.amount_minor", description: "must be an integer number of minor units" },
    ]);
  });

  test("amount_minor is refused exactly when it is not positive (edge-biased int64)", () => {
    fc.assert(
      fc.property(fc.bigInt({ min: int64Min, max: int64Max }), (amountMinor) => {
        const violations = validateMoney({ currency: "EUR", amountMinor }, "amount", { allowZero: false });
        expect(violations.length === 1).toBe(amountMinor <= 0n);
      }),
    );
  });
});

describe("validateCreditTransfer", () => {
  test("a fully valid transfer has no violations", () => {
    expect(validateCreditTransfer(validTransfer(), "transfer")).toEqual([]);
  });

  test("a missing transfer is one violation on the prefix", () => {
    expect(validateCreditTransfer(undefined, "transfers[2]")).toEqual([
      { field: "transfers[2]", description: "is required" },
    ]);
  });

  const idOf = (length: number): string => "X".repeat(length);
  // Each emoji is one code point but two UTF-16 units.
  const emojiOf = (length: number): string => "💶".repeat(length);

  test.each<[string, (transfer: CreditTransfer) => void, string[]]>([
    // Ids
    ["instruction_id missing", (t) => (t.instructionId = ""), ["transfer.instruction_id"]],
    ["instruction_id of 35 characters", (t) => (t.instructionId = idOf(limits.idLengthMax)), []],
    ["instruction_id of 36 characters", (t) => (t.instructionId = idOf(36)), ["transfer.instruction_id"]],
    ["instruction_id of 35 emoji (70 UTF-16 units)", (t) => (t.instructionId = emojiOf(35)), []],
    ["instruction_id of 36 emoji", (t) => (t.instructionId = emojiOf(36)), ["transfer.instruction_id"]],
    ["instruction_id with a newline", (t) => (t.instructionId = "INSTR\n1"), ["transfer.instruction_id"]],
    ["instruction_id with NUL", (t) => (t.instructionId = "INSTR\u00001"), ["transfer.instruction_id"]],
    ["end_to_end_id missing", (t) => (t.endToEndId = ""), ["transfer.end_to_end_id"]],
    ["end_to_end_id of 36 characters", (t) => (t.endToEndId = idOf(36)), ["transfer.end_to_end_id"]],
    ["end_to_end_id with DEL", (t) => (t.endToEndId = "E2E\u007f"), ["transfer.end_to_end_id"]],
    // UETR
    ["uetr missing", (t) => (t.uetr = ""), ["transfer.uetr"]],
    ["uetr version 1", (t) => (t.uetr = "f47ac10b-58cc-1372-a567-0e02b2c3d479"), ["transfer.uetr"]],
    ["uetr garbage", (t) => (t.uetr = "12345"), ["transfer.uetr"]],
    ["uetr upper case", (t) => (t.uetr = "EB6305C9-1F7E-4B1A-8B1C-0C4E5C1C2D3E"), []],
    // Agents
    ["debtor_agent missing", (t) => (t.debtorAgent = ""), ["transfer.debtor_agent"]],
    ["debtor_agent lower case", (t) => (t.debtorAgent = "deutdeff"), ["transfer.debtor_agent"]],
    ["creditor_agent 7 characters", (t) => (t.creditorAgent = "BNPAFRP"), ["transfer.creditor_agent"]],
    ["creditor_agent equal to debtor_agent", (t) => (t.creditorAgent = "DEUTDEFF"), ["transfer.creditor_agent"]],
    ["both agents the same malformed BIC", (t) => {
      t.debtorAgent = "BAD";
      t.creditorAgent = "BAD";
    }, ["transfer.debtor_agent", "transfer.creditor_agent"]],
    ["creditor_agent a branch of debtor_agent", (t) => (t.creditorAgent = "DEUTDEFF500"), []],
    ["creditor_agent DEUTDEFFXXX vs DEUTDEFF (full strings differ)", (t) => (t.creditorAgent = "DEUTDEFFXXX"), []],
    ["intermediary_agent valid", (t) => (t.intermediaryAgent = "COBADEFFXXX"), []],
    ["intermediary_agent malformed", (t) => (t.intermediaryAgent = "COBA"), ["transfer.intermediary_agent"]],
    // Amount
    ["amount missing", (t) => (t.amount = undefined), ["transfer.amount"]],
    ["amount zero", (t) => (t.amount = { currency: "EUR", amountMinor: 0n }), ["transfer.amount.amount_minor"]],
    ["amount -1", (t) => (t.amount = { currency: "EUR", amountMinor: -1n }), ["transfer.amount.amount_minor"]],
    ["amount int64 min", (t) => (t.amount = { currency: "EUR", amountMinor: int64Min }), ["transfer.amount.amount_minor"]],
    ["amount 1", (t) => (t.amount = { currency: "EUR", amountMinor: 1n }), []],
    ["amount int64 max", (t) => (t.amount = { currency: "EUR", amountMinor: int64Max }), []],
    ["amount above int64 max", (t) => (t.amount = { currency: "EUR", amountMinor: int64Max + 1n }), ["transfer.amount.amount_minor"]],
    ["currency lower case", (t) => (t.amount = { currency: "eur", amountMinor: 1n }), ["transfer.amount.currency"]],
    ["currency missing", (t) => (t.amount = { currency: "", amountMinor: 1n }), ["transfer.amount.currency"]],
    // Parties
    ["debtor missing", (t) => (t.debtor = undefined), ["transfer.debtor"]],
    ["creditor missing", (t) => (t.creditor = undefined), ["transfer.creditor"]],
    ["debtor name missing", (t) => (t.debtor = { name: "", iban: debtorIban }), ["transfer.debtor.name"]],
    ["debtor name of 140 characters", (t) => (t.debtor = { name: "N".repeat(140), iban: debtorIban }), []],
    ["debtor name of 141 characters", (t) => (t.debtor = { name: "N".repeat(141), iban: debtorIban }), ["transfer.debtor.name"]],
    ["creditor name of 140 accented letters", (t) => (t.creditor = { name: "é".repeat(140), iban: creditorIban }), []],
    ["debtor iban missing", (t) => (t.debtor = { name: debtorName, iban: "" }), ["transfer.debtor.iban"]],
    ["debtor iban wrong checksum", (t) => (t.debtor = { name: debtorName, iban: "DE88370400440532013000" }), ["transfer.debtor.iban"]],
    ["creditor iban lower case", (t) => (t.creditor = { name: creditorName, iban: "nl91abna0417164300" }), ["transfer.creditor.iban"]],
    ["creditor iban wrong length", (t) => (t.creditor = { name: creditorName, iban: "DE543704004405320130001" }), ["transfer.creditor.iban"]],
    // Optional text
    ["remittance_information empty", (t) => (t.remittanceInformation = ""), []],
    ["remittance_information of 140 characters", (t) => (t.remittanceInformation = "R".repeat(140)), []],
    ["remittance_information of 141 characters", (t) => (t.remittanceInformation = "R".repeat(141)), ["transfer.remittance_information"]],
    ["remittance_information with NUL", (t) => (t.remittanceInformation = "Invoice\u0000"), ["transfer.remittance_information"]],
    ["payment_request_id set", (t) => (t.paymentRequestId = "PR-1"), ["transfer.payment_request_id"]],
  ])("%s", (_case, mutate, expected) => {
    const transfer = validTransfer();
    mutate(transfer);
    expect(fieldsOf(transfer)).toEqual(expected);
  });

  test("the prefix is used for every field path", () => {
    const transfer = validTransfer();
    transfer.uetr = "";
    transfer.amount = { currency: "EUR", amountMinor: 0n };
    transfer.creditor = { name: creditorName, iban: "" };
    expect(fieldsOf(transfer, "transfers[3]")).toEqual([
      "transfers[3].uetr",
      "transfers[3].amount.amount_minor",
      "transfers[3].creditor.iban",
    ]);
  });

  test("all violations are reported, in proto field order", () => {
    const transfer: CreditTransfer = {
      instructionId: "",
      endToEndId: idOf(36),
      uetr: "f47ac10b-58cc-1372-a567-0e02b2c3d479",
      debtorAgent: "deutdeff",
      creditorAgent: "",
      intermediaryAgent: "X",
      amount: { currency: "EURO", amountMinor: -1n },
      debtor: undefined,
      creditor: { name: "", iban: "DE88370400440532013000" },
      remittanceInformation: "R".repeat(141),
      paymentRequestId: "PR-1",
    };
    expect(fieldsOf(transfer)).toEqual([
      "transfer.instruction_id",
      "transfer.end_to_end_id",
      "transfer.uetr",
      "transfer.debtor_agent",
      "transfer.creditor_agent",
      "transfer.intermediary_agent",
      "transfer.amount.currency",
      "transfer.amount.amount_minor",
      "transfer.debtor",
      "transfer.creditor.name",
      "transfer.creditor.iban",
      "transfer.remittance_information",
      "transfer.payment_request_id",
    ]);
  });

  test("a field both too long and with control characters gets both violations", () => {
    const transfer = validTransfer();
    transfer.instructionId = `${idOf(36)}\n`;
    expect(validateCreditTransfer(transfer, "transfer")).toEqual([
      { field: "transfer.instruction_id", description: "must be at most 35 characters" },
      { field: "transfer.instruction_id", description: "must not contain control characters" },
    ]);
  });

  test("descriptions are short sentences", () => {
    const transfer = validTransfer();
    transfer.creditorAgent = "DEUTDEFF";
    transfer.paymentRequestId = "PR-1";
    expect(validateCreditTransfer(transfer, "transfer")).toEqual([
      { field: "transfer.creditor_agent", description: "must differ from debtor_agent" },
      {
        field: "transfer.payment_request_id",
        description: "must be empty: quick payment is not supported by this node version",
      },
    ]);
  });

  test("descriptions never echo personal data", () => {
    const badIbans = ["DE88370400440532013000", "DE543704004405320130001", "de89370400440532013000", "DE89 3704"];
    for (const iban of badIbans) {
      const name = `${"Secret Name ".repeat(12)}\u0007`;
      const transfer = validTransfer();
      transfer.debtor = { name, iban };
      const violations = validateCreditTransfer(transfer, "transfer");
      expect(violations.map((violation) => violation.field)).toEqual([
        "transfer.debtor.name",
        "transfer.debtor.name",
        "transfer.debtor.iban",
      ]);
      for (const violation of violations) {
        expect(violation.description).not.toContain(iban);
        expect(violation.description).not.toContain("Secret");
      }
    }
  });

  test("a message built by hand in JavaScript with missing fields does not crash", () => {
    const transfer = { amount: {}, debtor: {}, creditor: {} } as unknown as CreditTransfer;
    expect(fieldsOf(transfer)).toEqual([
      "transfer.instruction_id",
      "transfer.end_to_end_id",
      "transfer.uetr",
      "transfer.debtor_agent",
      "transfer.creditor_agent",
      "transfer.amount.currency",
      "transfer.amount.amount_minor",
      "transfer.debtor.name",
      "transfer.debtor.iban",
      "transfer.creditor.name",
      "transfer.creditor.iban",
    ]);
  });

  test("the input is not modified", () => {
    const transfer = validTransfer();
    transfer.uetr = "garbage";
    const before = structuredClone(transfer);
    validateCreditTransfer(transfer, "transfer");
    expect(transfer).toEqual(before);
  });

  test("an empty prefix is a programmer error", () => {
    expect(() => validateCreditTransfer(validTransfer(), "")).toThrow(/field path/);
  });

  test("never throws for arbitrary strings in any field", () => {
    const text = fc.oneof(fc.string({ unit: "binary", maxLength: 300 }), fc.constantFrom("", "DEUTDEFF", debtorIban));
    fc.assert(
      fc.property(
        fc.record({
          instructionId: text,
          endToEndId: text,
          uetr: text,
          debtorAgent: text,
          creditorAgent: text,
          intermediaryAgent: text,
          amount: fc.option(fc.record({ currency: text, amountMinor: fc.bigInt() }), { nil: undefined }),
          debtor: fc.option(fc.record({ name: text, iban: text }), { nil: undefined }),
          creditor: fc.option(fc.record({ name: text, iban: text }), { nil: undefined }),
          remittanceInformation: text,
          paymentRequestId: text,
        }),
        (transfer) => {
          const violations = validateCreditTransfer(transfer, "transfer");
          for (const violation of violations) {
            expect(violation.field.startsWith("transfer")).toBe(true);
          }
        },
      ),
      { numRuns: 500 },
    );
  });
});
