// Who is calling. Until mutual TLS lands, and only because the node listens on
// loopback, the principal comes from the `x-principal` metadata key:
// `participant/<BIC>` or `operator/<name>`.
import type { Metadata } from '@grpc/grpc-js';
import { ClearingError } from '../clearing/errors.js';
import { isValidBic } from '../clearing/validation.js';

export type Principal = { kind: 'participant'; bic: string } | { kind: 'operator'; name: string };

export const principalMetadataKey = 'x-principal';

export function principalOf(metadata: Metadata): Principal {
  const values = metadata.get(principalMetadataKey);
  const raw = values[0];
  if (values.length !== 1 || typeof raw !== 'string' || raw === '') {
    throw new ClearingError(
      'UNAUTHENTICATED',
      'PRINCIPAL_MISSING',
      `no caller identity: send metadata ${principalMetadataKey}: participant/<BIC> or operator/<name>`,
    );
  }
  const participant = /^participant\/(.+)$/.exec(raw);
  if (participant !== null) {
    const bic = participant[1] as string;
    if (!isValidBic(bic)) {
      throw new ClearingError('UNAUTHENTICATED', 'PRINCIPAL_INVALID', `${principalMetadataKey}: '${bic}' is not a BIC`);
    }
    return { kind: 'participant', bic };
  }
  const operator = /^operator\/([A-Za-z0-9_.@-]{1,64})$/.exec(raw);
  if (operator !== null) return { kind: 'operator', name: operator[1] as string };
  throw new ClearingError(
    'UNAUTHENTICATED',
    'PRINCIPAL_INVALID',
    `${principalMetadataKey} must be participant/<BIC> or operator/<name>`,
  );
}

export function requireParticipant(principal: Principal): string {
  if (principal.kind !== 'participant') {
    throw new ClearingError('PERMISSION_DENIED', 'PARTICIPANTS_ONLY', 'ClearingService is called by participants; operators use OperatorService');
  }
  return principal.bic;
}

export function requireOperator(principal: Principal): string {
  if (principal.kind !== 'operator') {
    throw new ClearingError('PERMISSION_DENIED', 'OPERATORS_ONLY', 'OperatorService is for the scheme operator only');
  }
  return principal.name;
}
