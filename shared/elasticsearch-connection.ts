/**
 * The Elasticsearch connection settings (nodes, credentials, TLS) as a config schema, apart from the
 * client: a config can be checked without loading the client.
 */
import { z } from 'zod';
import { csvList } from './config.js';
import { secretSchema } from './secrets.js';

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
