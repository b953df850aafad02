#!/usr/bin/env bash
# Deploys a 3-node Sealbus cluster over ssh. DRY RUN BY DEFAULT: every command
# is printed (prefixed with "+"), nothing runs until you add --apply.
#
# usage: deploy.sh [--apply] [--env FILE] [--release NAME] COMMAND
#   install    create the service user and directories, ship this checkout as
#              a release, install dependencies and nats-server (npm ci + npm run
#              setup on the node), copy TLS material and the cluster secrets,
#              write /etc/sealbus/membershipd.env and the systemd unit
#   start      start all nodes WITHOUT waiting between them (a lone node cannot
#              become healthy: JetStream needs a quorum), then wait for each
#              /healthz
#   upgrade    ship this checkout as a new release and move the nodes to it one
#              at a time: restart, wait healthy with every replica current, next
#              (a node already on this release keeps its previous one)
#   rollback   point each node back at its previous release, one at a time;
#              refused on a node where that would change nothing
#   status     /healthz of every node
#   unit       print the systemd unit as install writes it (paths from FILE)
#
# The release is named after this checkout (git describe), or NAME. --apply
# refuses a name from git that ends in -dirty (uncommitted changes): a release
# name must stand for exactly one tree.
#
# FILE defaults to nodes.env next to this script (see nodes.env.example).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
apply=0
env_file=$here/nodes.env
cmd=""
release=""
while [ $# -gt 0 ]; do
  case $1 in
    --apply) apply=1 ;;
    --env) env_file=${2:?--env needs a file}; shift ;;
    --release) release=${2:?--release needs a name}; shift ;;
    -h|--help) sed -n '2,25p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    install|start|upgrade|rollback|status|unit) cmd=$1 ;;
    *) echo "deploy.sh: unknown argument '$1' (try --help)" >&2; exit 2 ;;
  esac
  shift
done
[ -n "$cmd" ] || { echo "deploy.sh: no command (install|start|upgrade|rollback|status|unit)" >&2; exit 2; }
[ -f "$env_file" ] || { echo "deploy.sh: no inventory at $env_file (copy nodes.env.example)" >&2; exit 2; }
# shellcheck source=/dev/null
source "$env_file"
: "${CLUSTER_NAME:?} ${INSTALL_DIR:?} ${CONFIG_DIR:?} ${DATA_DIR:?} ${SERVICE_USER:?}"
: "${CLIENT_PORT:?} ${ROUTE_PORT:?} ${HTTP_PORT:?} ${TLS_DIR:?} ${SECRETS_DIR:?}"
[ "${#NODES[@]}" -ge 3 ] || { echo "deploy.sh: NODES needs three entries" >&2; exit 2; }
# Everything below goes into remote root shells and the unit: plain values
# only. Paths: absolute, at least two levels, no '.'/'..' components, no
# empty ones, and not a system directory itself (a typo must not hand /, /etc
# or /usr/lib to the service user).
bad() { echo "deploy.sh: $*" >&2; exit 2; }
for v in INSTALL_DIR CONFIG_DIR DATA_DIR; do
  [[ ${!v} =~ ^(/[A-Za-z0-9_][A-Za-z0-9._-]*){2,}$ ]] ||
    bad "$v must be an absolute path of two or more plain components [A-Za-z0-9._-] (got '${!v}')"
  case ${!v} in
    /usr/*|/bin/*|/sbin/*|/lib/*|/lib64/*|/boot/*|/dev/*|/proc/*|/sys/*|/run/*)
      [[ ${!v} =~ ^/[^/]+/[^/]+/. ]] || bad "$v '${!v}' is a system directory" ;;
  esac
done
[[ $SERVICE_USER =~ ^[a-z_][a-z0-9_-]*$ ]] || bad "SERVICE_USER '$SERVICE_USER' is not a plain user name"
[ "$SERVICE_USER" != root ] || bad "SERVICE_USER must not be root"
[[ $CLUSTER_NAME =~ ^[A-Za-z0-9_-]+$ ]] || bad "CLUSTER_NAME '$CLUSTER_NAME' must be [A-Za-z0-9_-]"
for v in CLIENT_PORT ROUTE_PORT HTTP_PORT; do
  [[ ${!v} =~ ^[0-9]{1,5}$ ]] || bad "$v must be a port number (got '${!v}')"
done
case $TLS_DIR in /*) ;; *) TLS_DIR=$here/$TLS_DIR ;; esac
case $SECRETS_DIR in /*) ;; *) SECRETS_DIR=$here/$SECRETS_DIR ;; esac

if [ "$apply" = 1 ] && grep -q '<[a-z0-9-]*>' <(printf '%s\n' "${NODES[@]}"); then
  echo "deploy.sh: $env_file still has <placeholders>; fill them in before --apply" >&2
  exit 2
fi

# Every command goes through here: printed always, run only with --apply.
run() {
  printf '+ %s\n' "$*"
  if [ "$apply" = 1 ]; then "$@"; fi
}
# A command on a node, through ssh (quoted once, for the remote shell).
on() {
  local target=$1
  shift
  run ssh -o BatchMode=yes "$target" "$*"
}
# The same, reading a local file on its stdin: secrets and scripts reach
# their place without a copy at a guessable name in the node's /tmp.
on_stdin() {
  local file=$1 target=$2
  shift 2
  printf '+ %s\n' "ssh -o BatchMode=yes $target $*"
  if [ "$apply" = 1 ]; then ssh -o BatchMode=yes "$target" "$*" <"$file"; fi
}
# release.sh runs as root, so it lives outside every release tree (those
# belong to the service user, whose npm install scripts could rewrite them).
install_release_sh() { # target
  on_stdin "$here/release.sh" "$1" "sudo install -m 0755 -o root -g root /dev/stdin $INSTALL_DIR/release.sh"
}

if [ -z "$release" ]; then
  release=$(git -C "$repo" describe --always --dirty 2>/dev/null || date -u +%Y%m%d%H%M%S)
fi
# Whether named or from git (tags may hold ';', '$', '{'): one plain token.
[[ $release =~ ^[A-Za-z0-9][A-Za-z0-9._-]*$ ]] ||
  bad "release name '$release' must be [A-Za-z0-9][A-Za-z0-9._-]* (name one with --release)"
if [ "$apply" = 1 ] && [[ $release == *-dirty ]] && [[ $cmd == install || $cmd == upgrade ]]; then
  echo "deploy.sh: this checkout has uncommitted changes (release $release); commit them first: a release name must stand for one tree" >&2
  exit 2
fi
names=() targets=() addrs=()
# (<placeholders> pass here; --apply refused them above)
target_re='^[A-Za-z0-9<][A-Za-z0-9._@<>-]*$'
addr_re='^[A-Za-z0-9<:][A-Za-z0-9.:<>-]*$'
for line in "${NODES[@]}"; do
  read -r n t a <<<"$line"
  [[ $n =~ ^[A-Za-z0-9][A-Za-z0-9._-]*$ ]] || bad "node name '$n' must be [A-Za-z0-9._-]"
  [[ $t =~ $target_re ]] || bad "ssh target '$t' must be user@host"
  [[ $a =~ $addr_re ]] || bad "address '$a' must be a host name or an IP address"
  names+=("$n") targets+=("$t") addrs+=("$a")
done

node_args() { # index -> the membershipd serve flags of that node
  local i=$1 routes="" j
  for j in "${!names[@]}"; do
    [ "$j" = "$i" ] && continue
    routes+="nats-route://${addrs[$j]}:$ROUTE_PORT,"
    # No --authority for the peers: a node's own address is its alone, so
    # its request nonces can stay in its memory (clients sign for the node
    # they address, and afresh for each node they fail over to).
  done
  local n=${names[$i]} a=${addrs[$i]} tls=$CONFIG_DIR/tls sec=$CONFIG_DIR/secrets
  printf '%s' "--data $DATA_DIR --server-name $n --replicas 3 --bootstrap-budget 10m"
  printf ' %s' "--http $a:$HTTP_PORT --nats-host $a --nats-port $CLIENT_PORT"
  printf ' %s' "--cluster-name $CLUSTER_NAME --cluster-host $a --cluster-port $ROUTE_PORT"
  printf ' %s' "--routes ${routes%,} --cluster-advertise $a:$ROUTE_PORT --client-advertise $a:$CLIENT_PORT"
  printf ' %s' "--tls-cert $tls/$n.crt --tls-key $tls/$n.key --tls-ca $tls/client-ca.crt"
  printf ' %s' "--route-tls-cert $tls/$n-route.crt --route-tls-key $tls/$n-route.key --route-tls-ca $tls/route-ca.crt"
  printf ' %s' "--admin-id-file $sec/admin.id --callout-key-file $sec/callout.key"
}

ship_release() { # index
  local t=${targets[$1]} dir=$INSTALL_DIR/releases/$release
  on "$t" "sudo install -d -m 0755 $dir"
  run rsync -a --delete --exclude .git --exclude node_modules --exclude .tools \
    --exclude '**/dist' --exclude deploy/cluster/nodes.env --exclude deploy/cluster/tls \
    --exclude deploy/cluster/secrets --rsync-path="sudo rsync" "$repo/" "$t:$dir/"
  on "$t" "sudo chown -R $SERVICE_USER: $dir && sudo -u $SERVICE_USER sh -c 'cd $dir && npm ci --no-audit --no-fund && npm run setup'"
}

# The systemd unit with the inventory's paths and user.
render_unit() {
  sed -e "s|@INSTALL_DIR@|$INSTALL_DIR|g" -e "s|@CONFIG_DIR@|$CONFIG_DIR|g" \
    -e "s|@DATA_DIR@|$DATA_DIR|g" -e "s|@SERVICE_USER@|$SERVICE_USER|g" \
    "$here/sealbus-membershipd.service"
}

wait_healthy() { # index
  local a=${addrs[$1]} url="https://${addrs[$1]}:$HTTP_PORT/healthz"
  printf '+ wait for %s (200 with every replica current)\n' "$url"
  [ "$apply" = 1 ] || return 0
  local deadline=$((SECONDS + 600)) body
  while [ $SECONDS -lt $deadline ]; do
    if body=$(curl -fsS --max-time 5 --cacert "$TLS_DIR/client-ca.crt" "$url" 2>/dev/null) &&
      node -e 'const h = JSON.parse(require("fs").readFileSync(0, "utf8"));
        process.exit(h.status === "ok" && h.store.current === h.store.replicas ? 0 : 1)' <<<"$body"; then
      echo "  $a healthy"
      return 0
    fi
    sleep 2
  done
  echo "deploy.sh: ${names[$1]} ($a) not healthy after 10 minutes; see 'journalctl -u sealbus-membershipd'" >&2
  exit 1
}

case $cmd in
  install)
    for f in client-ca.crt route-ca.crt; do
      [ "$apply" = 0 ] || [ -f "$TLS_DIR/$f" ] || { echo "deploy.sh: missing $TLS_DIR/$f (run certs.sh)" >&2; exit 2; }
    done
    for f in admin.id callout.key; do
      [ "$apply" = 0 ] || [ -f "$SECRETS_DIR/$f" ] || {
        echo "deploy.sh: missing $SECRETS_DIR/$f (see README: first admin bootstrap)" >&2; exit 2; }
    done
    for i in "${!names[@]}"; do
      n=${names[$i]} t=${targets[$i]}
      echo "# node $n ($t)"
      on "$t" "id -u $SERVICE_USER >/dev/null 2>&1 || sudo useradd --system --home $DATA_DIR --shell /usr/sbin/nologin $SERVICE_USER"
      on "$t" "sudo install -d -m 0700 -o $SERVICE_USER -g $SERVICE_USER $DATA_DIR $CONFIG_DIR/tls $CONFIG_DIR/secrets"
      on "$t" "sudo install -d -m 0755 $INSTALL_DIR/releases"
      ship_release "$i"
      install_release_sh "$t"
      on "$t" "sudo $INSTALL_DIR/release.sh activate $INSTALL_DIR $INSTALL_DIR/releases/$release"
      for f in client-ca.crt route-ca.crt "$n.crt" "$n.key" "$n-route.crt" "$n-route.key"; do
        on_stdin "$TLS_DIR/$f" "$t" "sudo install -m 0600 -o $SERVICE_USER -g $SERVICE_USER /dev/stdin $CONFIG_DIR/tls/$f"
      done
      for f in admin.id callout.key; do
        on_stdin "$SECRETS_DIR/$f" "$t" "sudo install -m 0600 -o $SERVICE_USER -g $SERVICE_USER /dev/stdin $CONFIG_DIR/secrets/$f"
      done
      on "$t" "printf 'SEALBUS_ARGS=%s\n' '$(node_args "$i")' | sudo install -m 0640 -o root -g $SERVICE_USER /dev/stdin $CONFIG_DIR/membershipd.env"
      # The rendered unit travels inside the command (base64: no quoting to get wrong).
      on "$t" "echo $(render_unit | base64 | tr -d '\n') | base64 -d | sudo install -m 0644 /dev/stdin /etc/systemd/system/sealbus-membershipd.service && sudo systemctl daemon-reload && sudo systemctl enable sealbus-membershipd"
    done
    ;;
  start)
    for i in "${!names[@]}"; do on "${targets[$i]}" "sudo systemctl start --no-block sealbus-membershipd"; done
    for i in "${!names[@]}"; do wait_healthy "$i"; done
    ;;
  upgrade)
    for i in "${!names[@]}"; do
      t=${targets[$i]}
      echo "# node ${names[$i]}: release $release"
      ship_release "$i"
      install_release_sh "$t"
      on "$t" "sudo $INSTALL_DIR/release.sh activate $INSTALL_DIR $INSTALL_DIR/releases/$release"
      on "$t" "sudo systemctl restart sealbus-membershipd"
      wait_healthy "$i"
    done
    ;;
  rollback)
    for i in "${!names[@]}"; do
      t=${targets[$i]}
      echo "# node ${names[$i]}: back to the previous release"
      on "$t" "sudo $INSTALL_DIR/release.sh rollback $INSTALL_DIR"
      on "$t" "sudo systemctl restart sealbus-membershipd"
      wait_healthy "$i"
    done
    ;;
  unit)
    render_unit
    exit 0
    ;;
  status)
    for i in "${!names[@]}"; do
      run curl -sS --max-time 5 --cacert "$TLS_DIR/client-ca.crt" "https://${addrs[$i]}:$HTTP_PORT/healthz"
      if [ "$apply" = 1 ]; then echo; fi
    done
    ;;
esac
[ "$apply" = 1 ] || echo "# dry run: nothing was executed (add --apply to run the commands above)"
