#!/usr/bin/env bash
# Start (or stop) every server the test suite needs, on 127.0.0.1 only, with throwaway state
# under .services/. Installs the Debian packages it needs when they are missing.
#   scripts/services.sh start   -> writes .services/env (export lines for the test fixtures)
#   scripts/services.sh stop
# Ports can be moved (two checkouts side by side): POTLUCK_SERVICES_PORT_OFFSET=100 adds 100 to each.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
STATE=$ROOT/.services
OFFSET=${POTLUCK_SERVICES_PORT_OFFSET:-0}
PG_PORT=$((55432 + OFFSET))
REDIS_PORT=$((56379 + OFFSET))
CLUSTER_PORTS=($((47001 + OFFSET)) $((47002 + OFFSET)) $((47003 + OFFSET)))
SPARK_MASTER_PORT=$((57077 + OFFSET))
SPARK_WORKER_PORT=$((57078 + OFFSET))
SPARK_MASTER_UI=$((58080 + OFFSET))
SPARK_WORKER_UI=$((58081 + OFFSET))
KAFKA_PORT=$((59092 + OFFSET))
KAFKA_CONTROLLER_PORT=$((59093 + OFFSET))
VENV_PY=${POTLUCK_SERVICES_PYTHON:-$ROOT/.venv/bin/python}
JARS=${POTLUCK_JARS_CACHE:-$HOME/.cache/potluck/jars}

need_apt() {
  local missing=()
  command -v redis-server >/dev/null || missing+=(redis-server)
  command -v redis-cli >/dev/null || missing+=(redis-tools)
  ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)
  if [ ${#missing[@]} -gt 0 ]; then
    echo "services: installing ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null
    apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}

pg_bin() { ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1; }

wait_port() {  # host port seconds
  local deadline=$((SECONDS + $3))
  until (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; do
    [ $SECONDS -lt $deadline ] || { echo "services: $1:$2 did not open" >&2; return 1; }
    sleep 0.2
  done
}

start_postgres() {
  local bin; bin=$(pg_bin)
  local data=$STATE/pg
  rm -rf "$data"; mkdir -p "$data"
  chown -R postgres:postgres "$STATE/pg" 2>/dev/null || true
  echo potluck > "$STATE/pgpass"; chmod 644 "$STATE/pgpass"
  runuser -u postgres -- "$bin/initdb" -D "$data" -U potluck --pwfile="$STATE/pgpass" \
    --auth=scram-sha-256 -E UTF8 >/dev/null
  runuser -u postgres -- "$bin/pg_ctl" -D "$data" -l "$data/log" -w \
    -o "-h 127.0.0.1 -p $PG_PORT -k $data -c fsync=off -c max_connections=200" start >/dev/null
  PGPASSWORD=potluck "$bin/psql" -h 127.0.0.1 -p $PG_PORT -U potluck -d postgres -qc \
    "CREATE DATABASE potluck" >/dev/null
}

start_redis() {
  mkdir -p "$STATE/redis"
  redis-server --port $REDIS_PORT --bind 127.0.0.1 --save '' --appendonly no --daemonize yes \
    --dir "$STATE/redis" --pidfile "$STATE/redis/redis.pid" --logfile "$STATE/redis/log"
  wait_port 127.0.0.1 $REDIS_PORT 10
  local nodes=()
  for port in "${CLUSTER_PORTS[@]}"; do
    mkdir -p "$STATE/cluster/$port"
    redis-server --port "$port" --bind 127.0.0.1 --cluster-enabled yes \
      --cluster-config-file "$STATE/cluster/$port/nodes.conf" --save '' --appendonly no \
      --daemonize yes --dir "$STATE/cluster/$port" --pidfile "$STATE/cluster/$port/pid" \
      --logfile "$STATE/cluster/$port/log"
    wait_port 127.0.0.1 "$port" 10
    nodes+=("127.0.0.1:$port")
  done
  redis-cli --cluster create "${nodes[@]}" --cluster-replicas 0 --cluster-yes >/dev/null
  local deadline=$((SECONDS + 20))
  until redis-cli -p "${CLUSTER_PORTS[0]}" cluster info | grep -q 'cluster_state:ok'; do
    [ $SECONDS -lt $deadline ] || { echo "services: redis cluster not ok" >&2; return 1; }
    sleep 0.2
  done
}

spark_home() { "$VENV_PY" -c 'import os, pyspark; print(os.path.dirname(pyspark.__file__))'; }

# A standalone Spark master and one worker from the pyspark package (it has no sbin/ scripts, so
# the daemons start through spark-class). The worker offers 2 cores and 3 GiB; each test
# application asks for one core, so a training-set session and a spark-submit job run side by side.
start_spark() {
  if ! "$VENV_PY" -c 'import pyspark' 2>/dev/null; then
    echo "services: pyspark is not installed in $VENV_PY; Spark is not started" >&2
    return 0
  fi
  local home; home=$(spark_home)
  mkdir -p "$STATE/spark/local" "$STATE/spark/work" "$STATE/spark/logs"
  (
    export SPARK_HOME=$home SPARK_LOCAL_IP=127.0.0.1 SPARK_LOCAL_DIRS=$STATE/spark/local
    export PYSPARK_PYTHON=$VENV_PY SPARK_DAEMON_MEMORY=256m SPARK_LOG_DIR=$STATE/spark/logs
    export SPARK_MASTER_OPTS="-Dspark.master.rest.enabled=false"
    export SPARK_WORKER_OPTS="-Dspark.worker.cleanup.enabled=false"
    nohup "$home/bin/spark-class" org.apache.spark.deploy.master.Master --host 127.0.0.1 \
      --port $SPARK_MASTER_PORT --webui-port $SPARK_MASTER_UI >"$STATE/spark/master.log" 2>&1 &
    echo $! > "$STATE/spark/master.pid"
    wait_port 127.0.0.1 $SPARK_MASTER_PORT 60
    nohup "$home/bin/spark-class" org.apache.spark.deploy.worker.Worker --host 127.0.0.1 \
      --port $SPARK_WORKER_PORT --webui-port $SPARK_WORKER_UI --cores 2 --memory 3g \
      --work-dir "$STATE/spark/work" spark://127.0.0.1:$SPARK_MASTER_PORT \
      >"$STATE/spark/worker.log" 2>&1 &
    echo $! > "$STATE/spark/worker.pid"
  )
  local deadline=$((SECONDS + 90))
  until grep -q 'Successfully registered with master' "$STATE/spark/worker.log" 2>/dev/null; do
    [ $SECONDS -lt $deadline ] || { echo "services: spark worker did not register" >&2; return 1; }
    sleep 0.3
  done
  SPARK_MASTER_URL=spark://127.0.0.1:$SPARK_MASTER_PORT
}

# Jars from Maven Central into a cache outside the repo (~/.m2 and ~/.cache/potluck/jars).
fetch_jars() {  # pom name, output folder
  local out=$JARS/$2
  if [ ! -f "$out/.complete" ]; then
    command -v mvn >/dev/null || { echo "services: Maven (mvn) is needed for $2" >&2; return 1; }
    rm -rf "$out"; mkdir -p "$out"
    mvn -B -q -f "$ROOT/scripts/jars/$1.pom.xml" dependency:copy-dependencies \
      -DincludeScope=runtime -DoutputDirectory="$out" >"$STATE/mvn-$2.log" 2>&1 \
      || { echo "services: resolving $2 jars failed, see $STATE/mvn-$2.log" >&2; return 1; }
    touch "$out/.complete"
  fi
}

# One Kafka broker in KRaft mode (broker and controller in one JVM), loopback only.
start_kafka() {
  fetch_jars kafka-broker kafka
  fetch_jars spark-kafka spark-kafka
  local dir=$STATE/kafka
  mkdir -p "$dir/data" "$dir/logs"
  cat > "$dir/server.properties" <<PROPS
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
log.dirs=$dir/data
auto.create.topics.enable=false
num.partitions=4
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
broker.heartbeat.interval.ms=500
broker.session.timeout.ms=2000
log.cleaner.dedupe.buffer.size=16777216
PROPS
  cat > "$dir/log4j2.properties" <<PROPS
appender.file.type=File
appender.file.name=file
appender.file.fileName=$dir/logs/server.log
appender.file.layout.type=PatternLayout
appender.file.layout.pattern=[%d] %p %m (%c)%n
rootLogger.level=INFO
rootLogger.appenderRef.file.ref=file
PROPS
  local cp="$JARS/kafka/*" id
  id=$(java -cp "$cp" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n 1)
  java -cp "$cp" kafka.tools.StorageTool format -t "$id" -c "$dir/server.properties" \
    >"$dir/format.log" 2>&1 || { echo "services: kafka format failed, see $dir/format.log" >&2; return 1; }
  nohup java -Xms256m -Xmx256m -Dlog4j2.configurationFile="$dir/log4j2.properties" \
    -Dkafka.logs.dir="$dir/logs" -cp "$cp" kafka.Kafka "$dir/server.properties" \
    >"$dir/stdout.log" 2>&1 &
  echo $! > "$dir/pid"
  printf '#!/bin/sh\nkill "$(cat %s/pid)" 2>/dev/null || true\n' "$dir" > "$dir/stop.sh"
  chmod +x "$dir/stop.sh"
  local deadline=$((SECONDS + 60))
  until grep -q 'Kafka Server started' "$dir/logs/server.log" 2>/dev/null; do
    [ $SECONDS -lt $deadline ] || { echo "services: kafka did not start, see $dir/logs" >&2; return 1; }
    sleep 0.3
  done
}

stop_all() {
  if [ -d "$STATE/pg" ] && [ -f "$STATE/pg/postmaster.pid" ]; then
    runuser -u postgres -- "$(pg_bin)/pg_ctl" -D "$STATE/pg" -m immediate stop >/dev/null 2>&1 || true
  fi
  for pidfile in "$STATE"/redis/redis.pid "$STATE"/cluster/*/pid; do
    [ -f "$pidfile" ] && kill "$(cat "$pidfile")" 2>/dev/null || true
  done
  if [ -x "$STATE/kafka/stop.sh" ]; then "$STATE/kafka/stop.sh" || true; fi
  for pidfile in "$STATE"/spark/worker.pid "$STATE"/spark/master.pid; do
    [ -f "$pidfile" ] && kill "$(cat "$pidfile")" 2>/dev/null || true
  done
  sleep 0.5
}

case "${1:-start}" in
  start)
    need_apt
    stop_all
    rm -rf "$STATE"; mkdir -p "$STATE"; chmod 755 "$STATE"
    start_postgres
    start_redis
    SPARK_MASTER_URL=""
    start_spark
    start_kafka
    cat > "$STATE/env" <<ENV
export POTLUCK_TEST_POSTGRES_URL=postgresql://potluck:potluck@127.0.0.1:$PG_PORT/potluck
export POTLUCK_TEST_REDIS_URL=redis://127.0.0.1:$REDIS_PORT/0
export POTLUCK_TEST_REDIS_CLUSTER_NODES=127.0.0.1:${CLUSTER_PORTS[0]},127.0.0.1:${CLUSTER_PORTS[1]},127.0.0.1:${CLUSTER_PORTS[2]}
ENV
    if [ -n "$SPARK_MASTER_URL" ]; then
      echo "export POTLUCK_TEST_SPARK_MASTER=$SPARK_MASTER_URL" >> "$STATE/env"
      echo "export POTLUCK_TEST_SPARK_PYTHON=$VENV_PY" >> "$STATE/env"
    fi
    cat >> "$STATE/env" <<ENV
export POTLUCK_TEST_KAFKA_BOOTSTRAP=127.0.0.1:$KAFKA_PORT
export POTLUCK_TEST_SPARK_KAFKA_JARS=$(ls "$JARS"/spark-kafka/*.jar | paste -sd, -)
ENV
    echo "services: spark ${SPARK_MASTER_URL:-not started}, kafka :$KAFKA_PORT" >&2
    echo "services: postgres :$PG_PORT, redis :$REDIS_PORT, redis cluster :${CLUSTER_PORTS[*]}" >&2
    ;;
  stop) stop_all ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
