/** Apache Kafka, KRaft single node, from the broker's jars on Maven Central. */
import { randomUUID } from 'node:crypto';
import { cpSync, existsSync, mkdtempSync, readdirSync, renameSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { Kafka, logLevel } from 'kafkajs';
import { ensureDir, logFile, runLogged, SCRIPT_DIR, startDaemon, waitUntilReady, writeFileAtomic, type StackPaths } from './context.js';
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
    await runLogged(
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

export async function startKafka(paths: StackPaths): Promise<void> {
  const dir = ensureDir(join(paths.run, NAME));
  const dataDir = join(dir, 'data');
  const properties = join(dir, 'server.properties');
  writeFileAtomic(
    properties,
    [
      'process.roles=broker,controller',
      'node.id=1',
      `controller.quorum.voters=1@${HOST}:${PORTS.kafkaController}`,
      `listeners=PLAINTEXT://${HOST}:${PORTS.kafka},CONTROLLER://${HOST}:${PORTS.kafkaController}`,
      `advertised.listeners=PLAINTEXT://${HOST}:${PORTS.kafka}`,
      'listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT',
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
    ].join('\n'),
  );
  if (!existsSync(join(dataDir, 'meta.properties'))) {
    await runLogged('java', ['-cp', classpath(paths), 'kafka.tools.StorageTool', 'format', '-t', randomUUID(), '-c', properties, '--ignore-formatted'], logFile(paths, NAME));
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
      properties,
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

/** Ready when the broker answers a metadata request and can create and describe a topic. */
export async function waitForKafka(paths: StackPaths, timeoutMs: number): Promise<void> {
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
