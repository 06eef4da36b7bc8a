# syntax=docker/dockerfile:1
#
# Both logship images from one file:
#   docker build --target agent      -t <registry>/logship-agent:<tag> .
#   docker build --target aggregator -t <registry>/logship-aggregator:<tag> .
#
# Stages: `build` compiles TypeScript with the dev dependencies and bundles each binary with its
# libraries (scripts/bundle.ts: one minified file per binary plus on-demand chunks, only the parts of
# each library that are used: the Kubernetes client alone was ~70 MiB of the agent's memory unbundled).
# `runtime` is the Node image with that bundle and nothing else: no npm, no node_modules but koffi's
# prebuilt native module (the agent's idle page-out, shared/resident-memory.ts). Docker does
# not run on the project's machines: test/integration/runtime-layout.test.ts proves the same layout
# (the bundle alone in a clean folder, started as uid 65532).

# Node.js 22 LTS ("Jod"), pinned to the exact release. Pin the digest too where your registry
# policy asks for it: --build-arg NODE_IMAGE=node:22.23.2-bookworm-slim@sha256:<digest>.
ARG NODE_IMAGE=node:22.23.2-bookworm-slim

FROM ${NODE_IMAGE} AS build
WORKDIR /src
COPY package.json package-lock.json ./
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY shared ./shared
COPY agent ./agent
COPY aggregator ./aggregator
COPY scripts/bundle.ts ./scripts/bundle.ts
RUN npm run build

FROM ${NODE_IMAGE} AS runtime
ENV NODE_ENV=production \
    KAFKAJS_NO_PARTITIONER_WARNING=1
WORKDIR /app
# npm, corepack and yarn are removed: nothing runs them in the container.
RUN rm -rf /usr/local/lib/node_modules/npm /usr/local/lib/node_modules/corepack \
           /usr/local/bin/npm /usr/local/bin/npx /usr/local/bin/corepack \
           /opt/yarn-* /usr/local/bin/yarn /usr/local/bin/yarnpkg \
 && groupadd --gid 65532 logship \
 && useradd --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin logship
COPY --from=build /src/dist/bundle ./

# The node agent. Non-root; the DaemonSet adds group 0 so that it can read the runtime's log
# files (root:root 0640), see k8s/README.md.
FROM runtime AS agent
USER 65532:65532
EXPOSE 9102
ENTRYPOINT ["node", "/app/agent.mjs"]
CMD ["--config", "/etc/logship/config/agent.yaml"]

# The aggregator. Non-root, needs no group or capability.
FROM runtime AS aggregator
USER 65532:65532
EXPOSE 9103
ENTRYPOINT ["node", "/app/aggregator.mjs"]
CMD ["--config", "/etc/logship/config/aggregator.yaml"]
