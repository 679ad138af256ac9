// Opaque page tokens (AIP-158): base64url JSON of the last key of a page,
// tagged with what was listed so a token cannot be replayed against another list.
import { ClearingError } from './errors.js';

export const pageSizeDefault = 100;
export const pageSizeMax = 1000;

export function pageSize(requested: number): number {
  if (requested < 0) {
    throw new ClearingError('INVALID_ARGUMENT', 'INVALID_FIELDS', 'page_size: must not be negative', {
      fieldViolations: [{ field: 'page_size', description: 'must not be negative' }],
    });
  }
  return requested === 0 ? pageSizeDefault : Math.min(requested, pageSizeMax);
}

export function encodePageToken(list: string, key: unknown[]): string {
  return Buffer.from(JSON.stringify({ l: list, k: key })).toString('base64url');
}

/** The key inside a token, or undefined for an empty token; INVALID_ARGUMENT for a bad one. */
export function decodePageToken(list: string, token: string, arity: number): string[] | undefined {
  if (token === '') return undefined;
  try {
    const parsed = JSON.parse(Buffer.from(token, 'base64url').toString('utf8')) as { l?: unknown; k?: unknown };
    if (parsed.l === list && Array.isArray(parsed.k) && parsed.k.length === arity && parsed.k.every((v) => typeof v === 'string')) {
      return parsed.k as string[];
    }
  } catch {
    // fall through to the error below
  }
  throw new ClearingError('INVALID_ARGUMENT', 'INVALID_PAGE_TOKEN', 'page_token: not a token this list returned', {
    fieldViolations: [{ field: 'page_token', description: 'is not a token returned by this list' }],
  });
}
