#!/bin/sh
# Creates the secrets docker-compose.yml passes to its services (compose
# "secrets:", mounted under /run/secrets/, never in an environment variable,
# an image or this repository). Run once before the first `docker compose up`:
#
#   sh deploy/make-secrets.sh            # writes ./secrets/ (git-ignored)
#   sh deploy/make-secrets.sh DIR        # elsewhere (then edit the paths in docker-compose.yml)
#
# Existing files are kept, so re-running never changes a password in use.
# Random values come from openssl (or /dev/urandom). The folder is private to
# you (0700); the files themselves are readable (0644) because compose bind-
# mounts them as they are and each container runs as its own user.
set -eu
dir="${1:-$(cd "$(dirname "$0")/.." && pwd)/secrets}"
umask 077
mkdir -p "$dir"
chmod 700 "$dir"

random() {
  if command -v openssl >/dev/null 2>&1; then openssl rand -hex 24
  else od -An -N24 -tx1 /dev/urandom | tr -d ' \n'; echo; fi
}

make() {  # make NAME: a random value in DIR/NAME unless it exists
  if [ ! -s "$dir/$1" ]; then random > "$dir/$1"; echo "created $dir/$1"; fi
  chmod 644 "$dir/$1"
}

make cdiwatch_http_token        # the workers' bearer token (CDI_HTTP_TOKEN_FILE); Prometheus sends it
make grafana_admin_password     # Grafana's admin (GF_SECURITY_ADMIN_PASSWORD__FILE)
make kafka_admin_password       # the broker's own SASL user (inter-broker, health check)
make kafka_cdiwatch_password    # the monitor's SASL user (CDI_KAFKA_SASL_PASSWORD_FILE)

admin=$(cat "$dir/kafka_admin_password")
monitor=$(cat "$dir/kafka_cdiwatch_password")
# The broker's SASL/PLAIN users (JAAS), derived from the password files above.
cat > "$dir/kafka_server_jaas.conf" <<JAAS
KafkaServer {
  org.apache.kafka.common.security.plain.PlainLoginModule required
  username="admin" password="$admin"
  user_admin="$admin"
  user_cdiwatch="$monitor";
};
JAAS
# Client settings for the broker's health check (kafka-broker-api-versions.sh).
cat > "$dir/kafka_admin.properties" <<PROPS
security.protocol=SASL_PLAINTEXT
sasl.mechanism=PLAIN
sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required username="admin" password="$admin";
PROPS
chmod 644 "$dir/kafka_server_jaas.conf" "$dir/kafka_admin.properties"
echo "secrets in $dir"
