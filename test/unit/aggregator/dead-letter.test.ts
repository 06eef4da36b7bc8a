import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import kafkajs from 'kafkajs';
import { isPermanentProduceError } from '../../../aggregator/dead-letter.js';

const { KafkaJSProtocolError, KafkaJSNonRetriableError, KafkaJSConnectionError, KafkaJSNumberOfRetriesExceeded } = kafkajs;

describe('isPermanentProduceError', () => {
  it('is true for errors no retry fixes: a message too large, as kafkajs reports it after its own retries', () => {
    const tooLarge = new KafkaJSProtocolError('The request included a message larger than the max message size the server will accept');
    Object.assign(tooLarge, { retriable: false, type: 'MESSAGE_TOO_LARGE', code: 10 });
    assert.equal(isPermanentProduceError(tooLarge), true);
    assert.equal(isPermanentProduceError(new KafkaJSNonRetriableError(tooLarge)), true);
  });

  it('is false for what a retry can fix: a broken connection, retries exhausted on a retriable error', () => {
    assert.equal(isPermanentProduceError(new KafkaJSConnectionError('Connection error: ECONNREFUSED')), false);
    const notLeader = new KafkaJSProtocolError('This server is not the leader for that topic-partition');
    Object.assign(notLeader, { retriable: true });
    assert.equal(isPermanentProduceError(new KafkaJSNumberOfRetriesExceeded(notLeader, { retryCount: 5, retryTime: 1000 })), false);
    assert.equal(isPermanentProduceError(new Error('boom')), false);
  });
});
