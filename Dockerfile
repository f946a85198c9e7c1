# lockgate sidecar. Build: docker build -t lockgate .   Run: docker run -p 8080:8080 lockgate
# Configure with LOCKGATE_* variables or a YAML file mounted and named by LOCKGATE_CONFIG
# (see config/example.yaml).

# ---- build: compile TypeScript to dist/ ----
FROM node:20-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY scripts ./scripts
COPY src ./src
RUN npm run build

# ---- runtime: production dependencies, the build and the config defaults ----
FROM node:20-slim
ENV NODE_ENV=production \
    LOCKGATE_HOST=0.0.0.0 \
    LOCKGATE_PORT=8080
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund && npm cache clean --force
COPY --from=build /app/dist ./dist
COPY config ./config
# The image's unprivileged user (uid 1000); the app files stay owned by root, read-only to it.
USER node
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:' + (process.env.LOCKGATE_PORT || 8080) + '/readyz').then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
# node as PID 1 receives SIGTERM from docker stop and drains in-flight requests. The image runs
# the compiled `lockgate` command: `docker run lockgate serve` (the default), or another
# command, e.g. `docker run -e LOCKGATE_URL=… -e LOCKGATE_TOKEN=… lockgate lockouts`.
STOPSIGNAL SIGTERM
ENTRYPOINT ["node", "dist/cjs/cli/main.js"]
CMD ["serve"]
