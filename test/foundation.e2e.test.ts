// The skeleton end to end: a real node on a socket, called with the generated
// clients — health, reflection, identity, participants, configuration.
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { credentials, loadPackageDefinition, status, type GrpcObject, type ServiceClientConstructor } from '@grpc/grpc-js';
import { loadSync } from '@grpc/proto-loader';
import { createRequire } from 'node:module';
import path from 'node:path';
import { protoPath as healthProtoPath } from 'grpc-health-check';
import { ParticipantKind, ParticipantStatus, AcceptanceMode } from '../src/gen/clearing/v1/participant.js';
import { loadConfig, ConfigError } from '../src/config.js';
import { startNode } from '../src/node.js';
import { createLogger } from '../src/telemetry/logger.js';
import { clearingClient, failure, operatorClient } from './support/clients.js';
import { participant } from './support/fixtures.js';
import { startTestNode, type TestNode } from './support/node.js';

let t: TestNode;
beforeAll(async () => {
  t = await startTestNode();
});
afterAll(async () => {
  await t?.stop();
});

function grpcObject(file: string, includeDir: string): GrpcObject {
  return loadPackageDefinition(loadSync(file, { includeDirs: [includeDir], keepCase: true, enums: String }));
}

describe('server basics', () => {
  test('health reports SERVING for the node and both services', async () => {
    const health = grpcObject(healthProtoPath, path.resolve(path.dirname(healthProtoPath), '../..'));
    const Health = ((health.grpc as GrpcObject).health as GrpcObject).v1 as GrpcObject;
    const client = new (Health.Health as ServiceClientConstructor)(t.node.address, credentials.createInsecure());
    for (const service of ['', 'clearing.v1.ClearingService', 'clearing.v1.OperatorService']) {
      const response = await new Promise<{ status: string }>((resolve, reject) =>
        client.Check!({ service }, (error: Error | null, r: { status: string }) => (error ? reject(error) : resolve(r))),
      );
      expect(response.status).toBe('SERVING');
    }
    client.close();
  });

  test('reflection lists the clearing services and health', async () => {
    const require = createRequire(import.meta.url);
    const reflectionProto = path.join(path.dirname(require.resolve('@grpc/reflection')), '../proto/grpc/reflection/v1/reflection.proto');
    const reflection = grpcObject(reflectionProto, path.resolve(path.dirname(reflectionProto), '../../..'));
    const v1 = (((reflection.grpc as GrpcObject).reflection as GrpcObject).v1 as GrpcObject);
    const client = new (v1.ServerReflection as ServiceClientConstructor)(t.node.address, credentials.createInsecure());
    const services = await new Promise<string[]>((resolve, reject) => {
      const stream = client.ServerReflectionInfo!();
      stream.on('data', (r: { list_services_response?: { service: { name: string }[] } }) => {
        resolve(r.list_services_response?.service.map((s) => s.name) ?? []);
        stream.end();
      });
      stream.on('error', reject);
      stream.write({ list_services: '' });
    });
    expect(services).toEqual(expect.arrayContaining(['clearing.v1.ClearingService', 'clearing.v1.OperatorService', 'grpc.health.v1.Health']));
    client.close();
  });
});

describe('identity', () => {
  test('a call without x-principal is UNAUTHENTICATED', async () => {
    const anonymous = operatorClient(t.node.address, null);
    const f = await failure(anonymous.listParticipants({ pageSize: 0, pageToken: '' }));
    expect(f.code).toBe(status.UNAUTHENTICATED);
    expect(f.reason).toBe('PRINCIPAL_MISSING');
    anonymous.raw.close();
  });

  test.each([['participant/not a bic'], ['nobody'], ['operator/']])('a malformed principal %s is UNAUTHENTICATED', async (principal) => {
    const client = operatorClient(t.node.address, principal);
    expect((await failure(client.listParticipants({ pageSize: 0, pageToken: '' }))).code).toBe(status.UNAUTHENTICATED);
    client.raw.close();
  });

  test('a participant calling OperatorService is PERMISSION_DENIED', async () => {
    const bank = operatorClient(t.node.address, 'participant/ALPHDEFFXXX');
    const f = await failure(bank.listParticipants({ pageSize: 0, pageToken: '' }));
    expect(f.code).toBe(status.PERMISSION_DENIED);
    expect(f.reason).toBe('OPERATORS_ONLY');
    bank.raw.close();
  });

  test('an operator calling ClearingService is PERMISSION_DENIED', async () => {
    const op = clearingClient(t.node.address, 'operator/alice');
    expect((await failure(op.getPosition({ currency: '' }))).code).toBe(status.PERMISSION_DENIED);
    op.raw.close();
  });
});

describe('participants', () => {
  test('create, get, update and list round-trip through Postgres', async () => {
    const created = await t.operator.createParticipant({
      participant: participant('PRTCDEFFXXX', { settlementCurrencies: ['EUR', 'CHF'], status: ParticipantStatus.PARTICIPANT_STATUS_UNSPECIFIED }),
    });
    expect(created.participant).toMatchObject({
      bic: 'PRTCDEFFXXX',
      kind: ParticipantKind.PARTICIPANT_KIND_BANK,
      status: ParticipantStatus.PARTICIPANT_STATUS_ACTIVE,
      settlementCurrencies: ['CHF', 'EUR'],
    });
    expect(created.participant?.createTime).toBeInstanceOf(Date);

    const got = await t.operator.getParticipant({ bic: 'PRTCDEFFXXX' });
    expect(got.participant?.name).toBe('Bank PRTCDEFFXXX');

    const updated = await t.operator.updateParticipant({
      participant: participant('PRTCDEFFXXX', {
        name: 'Renamed Bank',
        status: ParticipantStatus.PARTICIPANT_STATUS_SUSPENDED,
        acceptanceMode: AcceptanceMode.ACCEPTANCE_MODE_EXPLICIT,
        settlementCurrencies: ['EUR', 'CHF', 'GBP'],
      }),
      updateMask: ['name', 'status', 'settlement_currencies'],
    });
    expect(updated.participant).toMatchObject({
      name: 'Renamed Bank',
      status: ParticipantStatus.PARTICIPANT_STATUS_SUSPENDED,
      // Not in the mask: unchanged.
      acceptanceMode: AcceptanceMode.ACCEPTANCE_MODE_AUTOMATIC,
      settlementCurrencies: ['CHF', 'EUR', 'GBP'],
    });
    const positions = await t.operator.listPositions({ bic: 'PRTCDEFFXXX', currency: '', pageSize: 0, pageToken: '' });
    expect(positions.positions.map((p) => p.currency)).toEqual(['CHF', 'EUR', 'GBP']);
  });

  test('a duplicate BIC is ALREADY_EXISTS', async () => {
    await t.operator.createParticipant({ participant: participant('DUPLDEFFXXX') });
    const f = await failure(t.operator.createParticipant({ participant: participant('DUPLDEFFXXX') }));
    expect(f.code).toBe(status.ALREADY_EXISTS);
    expect(f.reason).toBe('PARTICIPANT_EXISTS');
  });

  test('field errors are INVALID_ARGUMENT with every violation', async () => {
    const f = await failure(
      t.operator.createParticipant({
        participant: participant('bad-bic', { name: '', kind: ParticipantKind.PARTICIPANT_KIND_UNSPECIFIED, settlementCurrencies: ['EUR', 'euro'] }),
      }),
    );
    expect(f.code).toBe(status.INVALID_ARGUMENT);
    expect(f.fields).toEqual(
      expect.arrayContaining(['participant.bic', 'participant.name', 'participant.kind', 'participant.settlement_currencies[1]']),
    );
  });

  test.each([['DEUTDEF'], ['DEUTDEFF5'], ['deutdeff'], ['1EUTDEFF']])('BIC %s is refused', async (bic) => {
    const f = await failure(t.operator.createParticipant({ participant: participant(bic) }));
    expect(f.fields).toContain('participant.bic');
  });

  test('an unknown participant is NOT_FOUND', async () => {
    expect((await failure(t.operator.getParticipant({ bic: 'NONEDEFFXXX' }))).code).toBe(status.NOT_FOUND);
  });

  test('currencies can be added but not removed', async () => {
    await t.operator.createParticipant({ participant: participant('CURRDEFFXXX', { settlementCurrencies: ['EUR', 'USD'] }) });
    const f = await failure(
      t.operator.updateParticipant({ participant: participant('CURRDEFFXXX', { settlementCurrencies: ['EUR'] }), updateMask: ['settlement_currencies'] }),
    );
    expect(f.code).toBe(status.FAILED_PRECONDITION);
  });

  test('an unknown field in the update mask is INVALID_ARGUMENT', async () => {
    const f = await failure(t.operator.updateParticipant({ participant: participant('CURRDEFFXXX'), updateMask: ['kind'] }));
    expect(f.code).toBe(status.INVALID_ARGUMENT);
    expect(f.fields).toEqual(['update_mask']);
  });

  test('ListParticipants pages through everything once, in BIC order, with opaque tokens', async () => {
    const bics = Array.from({ length: 7 }, (_, i) => `PAGE${String.fromCharCode(65 + i)}EFFXXX`);
    for (const bic of bics) await t.operator.createParticipant({ participant: participant(bic) });
    const seen: string[] = [];
    let token = '';
    let pages = 0;
    do {
      const page = await t.operator.listParticipants({ pageSize: 3, pageToken: token });
      expect(page.participants.length).toBeLessThanOrEqual(3);
      seen.push(...page.participants.map((p) => p.bic));
      token = page.nextPageToken;
      pages += 1;
    } while (token !== '' && pages < 100);
    expect(seen).toEqual([...seen].sort());
    expect(new Set(seen).size).toBe(seen.length);
    expect(seen).toEqual(expect.arrayContaining(bics));
    const f = await failure(t.operator.listParticipants({ pageSize: 3, pageToken: 'not-a-token' }));
    expect(f.code).toBe(status.INVALID_ARGUMENT);
  });
});

describe('configuration', () => {
  test('a bad variable is named in the error', () => {
    expect(() => loadConfig({ CLEARING_BATCH_OPERATIONS_MAX: 'lots' })).toThrow(/CLEARING_BATCH_OPERATIONS_MAX/);
    expect(() => loadConfig({ DATABASE_URL: 'mysql://x' })).toThrow(/DATABASE_URL/);
    expect(() => loadConfig({ CLEARING_LOG_LEVEL: 'loud' })).toThrow(/CLEARING_LOG_LEVEL/);
    expect(() => loadConfig({ CLEARING_QUEUE_OPERATIONS_MAX: '10', CLEARING_BATCH_OPERATIONS_MAX: '100' })).toThrow(
      /CLEARING_QUEUE_OPERATIONS_MAX=10 must be at least CLEARING_BATCH_OPERATIONS_MAX=100/,
    );
    expect(() => loadConfig({ CLEARING_DECIDE_AHEAD_OPERATIONS_MIN: '200', CLEARING_BATCH_OPERATIONS_MAX: '100' })).toThrow(
      /CLEARING_DECIDE_AHEAD_OPERATIONS_MIN=200 must not exceed CLEARING_BATCH_OPERATIONS_MAX=100/,
    );
    // Left at its default, the threshold above a small batch size just means never.
    expect(loadConfig({ CLEARING_BATCH_OPERATIONS_MAX: '50' }).decideAheadOperationsMin).toBe(100);
  });

  test('the node refuses a non-loopback address without TLS', async () => {
    const config = loadConfig({ CLEARING_GRPC_ADDRESS: '0.0.0.0:50051', DATABASE_URL: t.databaseUrl });
    await expect(startNode(config, createLogger('silent'))).rejects.toThrow(ConfigError);
    await expect(startNode(config, createLogger('silent'))).rejects.toThrow(/loopback.*TLS/);
  });
});
