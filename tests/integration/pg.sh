# PostgreSQL for the fleet tests: a private cluster in $TEST_DIR/pg, on a
# Unix socket only (PG_LISTEN and PG_PORT, set before sourcing, add TCP), as
# the postgres user when run as root (PostgreSQL refuses root). Source after
# lib.sh; it starts the server and sets pg_bin, pg_dir, pg_start, pg_stop and
# psql "SQL". Exits 77 (skip) only when PostgreSQL cannot be installed.
pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
if [ -z "$pg_bin" ] || [ ! -x "$pg_bin/initdb" ]; then
	if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
		echo "installing postgresql with apt-get"
		DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
		    postgresql >"$TEST_DIR/apt.log" 2>&1 || true
	fi
	pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
	if [ -z "$pg_bin" ] || [ ! -x "$pg_bin/initdb" ]; then
		echo "SKIP: PostgreSQL is not installed and could not be (apt-get install postgresql" \
		    "needs root and a reachable Debian mirror)"
		exit 77
	fi
fi

# PostgreSQL refuses to run as root: run it as the postgres user then.
pg_dir="$TEST_DIR/pg"
mkdir "$pg_dir"
if [ "$(id -u)" -eq 0 ]; then
	id postgres >/dev/null 2>&1 || { echo "SKIP: running as root with no postgres user"; exit 77; }
	chmod 711 "$TEST_DIR"
	chown postgres "$pg_dir"
	as_pg() { runuser -u postgres -- "$@"; }
else
	as_pg() { "$@"; }
fi
as_pg "$pg_bin/initdb" -D "$pg_dir/data" -A trust -U ollm --no-sync >"$TEST_DIR/initdb.log" 2>&1 ||
	fail "initdb: $(tail -n 5 "$TEST_DIR/initdb.log")"
pg_start() {
	as_pg "$pg_bin/pg_ctl" -D "$pg_dir/data" -l "$pg_dir/server.log" -w -t 30 \
	    -o "-c listen_addresses='${PG_LISTEN:-}' -c port=${PG_PORT:-5432} -c unix_socket_directories='$pg_dir' -c fsync=off -c track_functions=pl" \
	    start >/dev/null || fail "PostgreSQL did not start: $(tail -n 5 "$pg_dir/server.log")"
}
pg_stop() {
	as_pg "$pg_bin/pg_ctl" -D "$pg_dir/data" -m fast -w stop >/dev/null 2>&1
}
trap 'st=$?; set +e; pg_stop; [ "$st" -eq 0 ] || grep -h fleet "$TEST_DIR"/alpha.log "$TEST_DIR"/beta.log "$TEST_DIR"/gamma.log 2>/dev/null | tail -n 30; (exit $st); test_cleanup' EXIT
pg_start
psql() { "$pg_bin/psql" -h "$pg_dir" -p "${PG_PORT:-5432}" -U ollm -d postgres -Atq -v ON_ERROR_STOP=1 -c "$1"; }

