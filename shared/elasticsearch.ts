/**
 * The project's one entry to the Elasticsearch client: nodes, authentication (API key or basic) and
 * TLS. Pinned to the 8.x client to match 8.x servers (the client checks the product header).
 */
import { Client, type ClientOptions } from '@elastic/elasticsearch';
import type { ElasticsearchConnectionConfig } from './elasticsearch-connection.js';
import { readTlsFile, resolveSecret } from './secrets.js';

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
