/**
 * The project's one entry to the Elasticsearch client: nodes, authentication (API key or basic) and
 * TLS. Pinned to the 8.x client to match 8.x servers (the client checks the product header).
 */
import { Client, type ClientOptions } from '@elastic/elasticsearch';
import { z } from 'zod';
import { csvList } from './config.js';
import { readTlsFile, resolveSecret, secretSchema } from './secrets.js';

export const elasticsearchConnectionSchema = z
  .strictObject({
    nodes: csvList(z.url()).pipe(z.array(z.string()).min(1, 'at least one node URL is required')).describe('Elasticsearch node URLs.'),
    apiKey: secretSchema.optional().describe('API key (the base64 `id:key` form): `value` (from an env override) or `file`.'),
    username: z.string().min(1).optional().describe('User for basic authentication.'),
    password: secretSchema.optional().describe('Password for basic authentication: `value` or `file`.'),
    caFile: z.string().optional().describe('PEM file of the CA that signed the nodes\' certificates.'),
    rejectUnauthorized: z.boolean().default(true).describe('Verify the nodes\' certificates. Turn off only in tests.'),
    requestTimeoutMs: z.number().int().min(100).default(30_000).describe('Time to wait for one request.'),
  })
  .superRefine((c, ctx) => {
    if (c.apiKey && c.username) ctx.addIssue({ code: 'custom', path: ['apiKey'], message: 'use either apiKey or username/password, not both' });
    if ((c.username === undefined) !== (c.password === undefined)) {
      ctx.addIssue({ code: 'custom', path: [c.username === undefined ? 'username' : 'password'], message: 'username and password go together' });
    }
  });

export type ElasticsearchConnectionConfig = z.output<typeof elasticsearchConnectionSchema>;

export function createElasticsearchClient(config: ElasticsearchConnectionConfig, settingPath = 'elasticsearch'): Client {
  const options: ClientOptions = {
    nodes: config.nodes,
    requestTimeout: config.requestTimeoutMs,
    // Retries are ours (per bulk item, with jitter); the client's own would retry whole requests blindly.
    maxRetries: 0,
    compression: false,
  };
  const apiKey = resolveSecret(config.apiKey, `${settingPath}.apiKey`);
  if (apiKey !== undefined) options.auth = { apiKey };
  else if (config.username !== undefined) {
    options.auth = { username: config.username, password: resolveSecret(config.password, `${settingPath}.password`) ?? '' };
  }
  const ca = readTlsFile(config.caFile, `${settingPath}.caFile`);
  if (ca !== undefined || !config.rejectUnauthorized) options.tls = { ca, rejectUnauthorized: config.rejectUnauthorized };
  return new Client(options);
}
