/** Apache Kafka, KRaft single node, from the broker's jars on Maven Central. */
import { randomBytes, randomUUID } from 'node:crypto';
import { cpSync, existsSync, mkdtempSync, readdirSync, readFileSync, renameSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { Kafka, logLevel } from 'kafkajs';
import { ensureDir, logFile, runLogged, runningPid, SCRIPT_DIR, startDaemon, stopDaemon, waitUntilReady, writeFileAtomic, type StackPaths } from './context.js';
import { caFile, ensureServerCertificate } from './pki.js';
import { runWithProgress } from './progress.js';
import { HOST, PORTS, VERSIONS } from './versions.js';

const NAME = 'kafka';

export function kafkaHome(paths: StackPaths): string {
  return join(paths.home, `kafka-${VERSIONS.kafka}`);
}

export async function installKafka(paths: StackPaths): Promise<boolean> {
  const libs = join(kafkaHome(paths), 'libs');
  if (existsSync(join(libs, `kafka_2.13-${VERSIONS.kafka}.jar`))) return false;
  const work = mkdtempSync(join(ensureDir(paths.build), 'kafka-'));
  try {
    cpSync(join(SCRIPT_DIR, 'kafka', 'pom.xml'), join(work, 'pom.xml'));
    await runWithProgress(
      `kafka: downloading Apache Kafka ${VERSIONS.kafka} and its libraries (Maven)`,
      'mvn',
      ['-q', '-B', `-Dkafka.version=${VERSIONS.kafka}`, 'dependency:copy-dependencies', `-DoutputDirectory=${join(work, 'libs')}`, '-DincludeScope=runtime'],
      logFile(paths, 'install-kafka'),
      { cwd: work },
    );
    ensureDir(kafkaHome(paths));
    rmSync(libs, { recursive: true, force: true });
    renameSync(join(work, 'libs'), libs);
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
  return true;
}

export function kafkaBrokers(): string[] {
  return [`${HOST}:${PORTS.kafka}`];
}

/** The TLS + SASL/SCRAM listener: its user, whose password lives in a 0600 file, never in endpoints.json. */
export const KAFKA_SASL_USER = 'logship';
export const KAFKA_SASL_MECHANISM = 'scram-sha-512';

export function kafkaSecureEndpoint(paths: StackPaths): { brokers: string[]; caFile: string; mechanism: string; username: string; passwordFile: string } {
  return { brokers: [`${HOST}:${PORTS.kafkaSecure}`], caFile: caFile(paths), mechanism: KAFKA_SASL_MECHANISM, username: KAFKA_SASL_USER, passwordFile: saslPasswordFile(paths) };
}

function saslPasswordFile(paths: StackPaths): string {
  return join(paths.run, NAME, 'sasl-password');
}

function saslPassword(paths: StackPaths): string {
  const file = saslPasswordFile(paths);
  if (!existsSync(file)) writeFileAtomic(file, randomBytes(18).toString('base64url'), 0o600);
  return readFileSync(file, 'utf8').trim();
}

/**
 * Starts the broker, or restarts it when the one running was started with other settings (an older
 * version of this script), so `up` always leaves the broker this script describes.
 */
export async function ensureKafkaRunning(paths: StackPaths): Promise<void> {
  const properties = join(ensureDir(join(paths.run, NAME)), 'server.properties');
  const wanted = await kafkaProperties(paths);
  const current = existsSync(properties) ? readFileSync(properties, 'utf8') : undefined;
  if (runningPid(paths, NAME) !== undefined) {
    if (current === wanted) return;
    await stopDaemon(paths, NAME, 60_000);
  }
  await startKafka(paths, wanted);
}

async function kafkaProperties(paths: StackPaths): Promise<string> {
  const dir = ensureDir(join(paths.run, NAME));
  const dataDir = join(dir, 'data');
  // Kafka reads a PEM key store holding the PKCS#8 key followed by the certificate chain.
  const { cert, key } = await ensureServerCertificate(paths, 'kafka', [`IP:${HOST}`, 'DNS:localhost']);
  const keystore = join(dir, 'keystore.pem');
  writeFileAtomic(keystore, `${readFileSync(key, 'utf8').trim()}\n${readFileSync(cert, 'utf8').trim()}\n`, 0o600);
  const jaas = 'org.apache.kafka.common.security.scram.ScramLoginModule required;';
  return [
      'process.roles=broker,controller',
      'node.id=1',
      `controller.quorum.voters=1@${HOST}:${PORTS.kafkaController}`,
      `listeners=PLAINTEXT://${HOST}:${PORTS.kafka},SASL_SSL://${HOST}:${PORTS.kafkaSecure},CONTROLLER://${HOST}:${PORTS.kafkaController}`,
      `advertised.listeners=PLAINTEXT://${HOST}:${PORTS.kafka},SASL_SSL://${HOST}:${PORTS.kafkaSecure}`,
      'listener.security.protocol.map=PLAINTEXT:PLAINTEXT,SASL_SSL:SASL_SSL,CONTROLLER:PLAINTEXT',
      'sasl.enabled.mechanisms=SCRAM-SHA-256,SCRAM-SHA-512',
      `listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config=${jaas}`,
      `listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=${jaas}`,
      'ssl.keystore.type=PEM',
      `ssl.keystore.location=${keystore}`,
      'ssl.client.auth=none',
      'controller.listener.names=CONTROLLER',
      'inter.broker.listener.name=PLAINTEXT',
      `log.dirs=${dataDir}`,
      'num.partitions=3',
      'auto.create.topics.enable=true',
      'offsets.topic.replication.factor=1',
      'offsets.topic.num.partitions=10',
      'transaction.state.log.replication.factor=1',
      'transaction.state.log.min.isr=1',
      'group.initial.rebalance.delay.ms=0',
      'log.retention.hours=24',
      'log.segment.bytes=268435456',
      'delete.topic.enable=true',
      '',
    ].join('\n');
}

async function startKafka(paths: StackPaths, properties: string): Promise<void> {
  const dir = ensureDir(join(paths.run, NAME));
  const dataDir = join(dir, 'data');
  const propertiesFile = join(dir, 'server.properties');
  writeFileAtomic(propertiesFile, properties);
  if (!existsSync(join(dataDir, 'meta.properties'))) {
    await runLogged('java', ['-cp', classpath(paths), 'kafka.tools.StorageTool', 'format', '-t', randomUUID(), '-c', propertiesFile, '--ignore-formatted'], logFile(paths, NAME));
  }
  startDaemon(paths, {
    name: NAME,
    command: 'java',
    args: [
      '-Xms256m',
      '-Xmx768m',
      '-XX:+UseG1GC',
      `-Dlog4j.configuration=file:${writeLog4j(dir)}`,
      `-Dlogship.stack=${NAME}`,
      '-cp',
      classpath(paths),
      'kafka.Kafka',
      propertiesFile,
    ],
    marker: `-Dlogship.stack=${NAME}`,
  });
}

function classpath(paths: StackPaths): string {
  const libs = join(kafkaHome(paths), 'libs');
  return readdirSync(libs)
    .filter((f) => f.endsWith('.jar'))
    .map((f) => join(libs, f))
    .join(':');
}

function writeLog4j(dir: string): string {
  const file = join(dir, 'log4j.properties');
  writeFileAtomic(
    file,
    [
      'log4j.rootLogger=INFO, stdout',
      'log4j.appender.stdout=org.apache.log4j.ConsoleAppender',
      'log4j.appender.stdout.layout=org.apache.log4j.PatternLayout',
      'log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n',
      'log4j.logger.kafka=INFO',
      'log4j.logger.org.apache.kafka=INFO',
      'log4j.logger.state.change.logger=WARN',
      'log4j.logger.kafka.request.logger=WARN',
      '',
    ].join('\n'),
  );
  return file;
}

/**
 * Ready when the broker answers a metadata request and can create and describe a topic, then the
 * SCRAM user exists (created or updated through the plaintext listener, its password passed in a
 * file, never on a command line) and the TLS + SASL listener answers with it.
 */
export async function waitForKafka(paths: StackPaths, timeoutMs: number): Promise<void> {
  await waitForPlaintext(paths, timeoutMs);
  // The password goes on the command line (the file form of ConfigCommand rejects SCRAM entries);
  // it is masked in the log, and this is a loopback-only test stack.
  const password = saslPassword(paths);
  // One mechanism per request: the broker refuses two alterations of one user in the same request.
  for (const mechanism of ['SCRAM-SHA-256', 'SCRAM-SHA-512']) {
    await runLogged(
      'java',
      ['-cp', classpath(paths), 'kafka.admin.ConfigCommand', '--bootstrap-server', kafkaBrokers()[0] ?? '', '--alter', '--entity-type', 'users', '--entity-name', KAFKA_SASL_USER, '--add-config', `${mechanism}=[iterations=8192,password=${password}]`],
      logFile(paths, NAME),
      {},
      [password],
    );
  }
  const secure = new Kafka({
    clientId: 'logship-stack',
    brokers: kafkaSecureEndpoint(paths).brokers,
    ssl: { ca: readFileSync(caFile(paths), 'utf8') },
    sasl: { mechanism: KAFKA_SASL_MECHANISM, username: KAFKA_SASL_USER, password: saslPassword(paths) },
    logLevel: logLevel.NOTHING,
    retry: { retries: 0 },
    connectionTimeout: 2_000,
  });
  await waitUntilReady(
    paths,
    NAME,
    async () => {
      const admin = secure.admin();
      try {
        await admin.connect();
        return (await admin.listTopics()).includes('__logship_stack_probe');
      } finally {
        await admin.disconnect();
      }
    },
    timeoutMs,
  );
}

async function waitForPlaintext(paths: StackPaths, timeoutMs: number): Promise<void> {
  const kafka = new Kafka({ clientId: 'logship-stack', brokers: kafkaBrokers(), logLevel: logLevel.NOTHING, retry: { retries: 0 }, connectionTimeout: 2_000 });
  await waitUntilReady(
    paths,
    NAME,
    async () => {
      const admin = kafka.admin();
      try {
        await admin.connect();
        await admin.createTopics({ topics: [{ topic: '__logship_stack_probe', numPartitions: 1 }], waitForLeaders: true });
        const meta = await admin.fetchTopicMetadata({ topics: ['__logship_stack_probe'] });
        return meta.topics[0]?.partitions[0]?.leader === 1;
      } finally {
        await admin.disconnect();
      }
    },
    timeoutMs,
  );
}
