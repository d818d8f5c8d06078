# Opsdeck: `make run` starts everything, `make test` runs the suite. Nothing else to install
# but Python 3.11: PostgreSQL and Redis are embedded unless DATABASE_URL / REDIS_URL are set.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
export DJANGO_SETTINGS_MODULE := project.settings
# Benchmarks run against the embedded services after migrating: a fresh checkout's database is empty.
BENCH := $(PY) -m project.devservices exec -- sh -c '$(PY) manage.py migrate --no-input -v0 && exec "$$@"' bench

.PHONY: run test ci lint hooks check alerts install-promtool install-hypopg bench bench-search load bench-approvals bench-reconciliation bench-recon-files chaos fuzz clean-venv

$(VENV)/.installed: requirements.txt
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "Opsdeck needs $(PYTHON) (or set PYTHON=...)"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed requirements-dev.txt
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	touch $@

run: $(VENV)/.installed
	$(PY) -m project.devservices run

test: $(VENV)/.installed-dev
	$(PY) -m project.devservices exec -- $(PY) -m pytest $(PYTEST_ARGS)

lint: $(VENV)/.installed-dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports

hooks: $(VENV)/.installed-dev  # git pre-commit hook: ruff check, ruff format --check, lint-imports
	$(VENV)/bin/pre-commit install

check: $(VENV)/.installed-dev
	$(PY) -m project.devservices exec -- $(PY) manage.py makemigrations --check --dry-run
	SECRET_KEY="ci-$$($(PY) -c 'import secrets; print(secrets.token_urlsafe(50))')" DEBUG=false \
		ALLOWED_HOSTS=opsdeck.example.com $(PY) manage.py check --deploy --fail-level WARNING

# Prometheus alert rules: syntax, then their unit tests (each alert fires above its threshold and
# not at it), then the scrape config. promtool comes from Debian's prometheus package when missing.
PROMTOOL ?= promtool
alerts:
	@command -v $(PROMTOOL) >/dev/null 2>&1 || $(MAKE) --no-print-directory install-promtool
	$(PROMTOOL) check rules deploy/prometheus/alerts.yml
	$(PROMTOOL) test rules deploy/prometheus/alerts_test.yml
	$(PROMTOOL) check config --syntax-only deploy/prometheus/prometheus.yml

SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
install-promtool:
	@command -v apt-get >/dev/null 2>&1 || { echo "promtool is missing and there is no apt-get: install Prometheus' promtool"; exit 1; }
	$(SUDO) apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends prometheus
	@# The package also installs (and on systemd hosts starts) a Prometheus server: CI needs only promtool.
	@if command -v systemctl >/dev/null 2>&1; then $(SUDO) systemctl disable --now prometheus >/dev/null 2>&1 || true; fi
	@command -v promtool >/dev/null 2>&1 || { echo "installing prometheus gave no promtool"; exit 1; }

# The index advisor's verified path (HypoPG) is tested against the PostgreSQL at OPSDECK_HYPOPG_DSN
# (the embedded server cannot load HypoPG: docs/monitoring.md); those tests skip without it. This
# installs Debian's postgresql-NN-hypopg for that server's major version when it lacks the
# extension; with no server there it only says so (the tests then skip).
OPSDECK_HYPOPG_DSN ?= postgresql://postgres@127.0.0.1:5432/postgres
install-hypopg: $(VENV)/.installed
	@state=$$($(PY) -c 'import sys, psycopg; c = psycopg.connect(sys.argv[1], connect_timeout=3); \
		print(c.info.server_version // 10000, c.execute("SELECT count(*) FROM pg_available_extensions WHERE name = %s", ["hypopg"]).fetchone()[0])' \
		"$(OPSDECK_HYPOPG_DSN)" 2>/dev/null) || { echo "no PostgreSQL at OPSDECK_HYPOPG_DSN: the HypoPG tests will skip"; exit 0; }; \
	set -- $$state; \
	if [ "$$2" != 0 ]; then echo "HypoPG is available on the PostgreSQL $$1 server"; exit 0; fi; \
	command -v apt-get >/dev/null 2>&1 || { echo "HypoPG is missing and there is no apt-get: the HypoPG tests will skip"; exit 0; }; \
	{ $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends postgresql-$$1-hypopg; } \
	|| echo "could not install postgresql-$$1-hypopg: the HypoPG tests will skip"

# What CI runs after `make test`.
ci: install-hypopg test lint check alerts

bench: $(VENV)/.installed-dev
	$(BENCH) $(PY) bench/pagination.py

bench-search: $(VENV)/.installed-dev
	$(BENCH) $(PY) bench/search.py

# Closed-loop load test beside a raw floor (bench/load/run.py; LOAD_SECONDS, LOAD_USERS,
# LOAD_SCENARIOS, LOAD_TASKS, WEB_CONCURRENCY, WEB_THREADS configure it). Seeds 1M tasks once under var/.
load: $(VENV)/.installed-dev
	$(PY) -m project.devservices exec -- $(PY) bench/load/run.py

bench-approvals: $(VENV)/.installed-dev
	$(BENCH) $(PY) bench/approvals.py

bench-reconciliation: $(VENV)/.installed-dev
	$(BENCH) $(PY) bench/reconciliation.py

# Source-profile CSV vs plain CSV ingest rate, and the streamed export's time and web RSS
# (bench/recon_files.py). RECON_FILES_ARGS="--records 1000000" for the issue's size.
bench-recon-files: $(VENV)/.installed-dev
	$(BENCH) $(PY) bench/recon_files.py $(RECON_FILES_ARGS)

# Faults against a stack of its own (embedded PostgreSQL + Redis under var/chaos, gunicorn on
# 127.0.0.1:$(CHAOS_PORT), a worker, beat) under a steady load; ~10 minutes, Linux only (pg_ctl,
# signals, /proc). Prints a table per fault, saved to bench/results/chaos-<timestamp>.txt; exits 1 on
# a failed assertion. docs/testing.md says what each fault checks.
CHAOS_PORT ?= 8765
chaos: $(VENV)/.installed-dev
	$(PY) bench/chaos.py --port $(CHAOS_PORT) $(CHAOS_ARGS)

# schemathesis over every API operation against its own `make run` stack (port FUZZ_PORT, default
# 8931; data in var/fuzz/), bounded by FUZZ_MAX_TIME_S (default 300 s). Prints a table, writes it
# to bench/results/fuzz-<timestamp>.txt, fails on any server error or schema/status violation.
# docs/testing.md says what it checks.
fuzz: $(VENV)/.installed-dev
	$(PY) bench/fuzz.py $(FUZZ_ARGS)

# Headless-Chromium smoke test of the monitoring cockpit: screenshots in var/e2e/. Not part of
# `make test`/CI (it starts a browser and a server). Installs Debian's chromium if it is missing.
.PHONY: e2e
e2e: $(VENV)/.installed-dev
	@command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1 || { \
		echo "installing Debian's chromium and chromium-driver"; \
		$$(command -v sudo) apt-get update -qq && $$(command -v sudo) apt-get install -y -qq chromium chromium-driver; }
	$(PY) -m project.devservices exec -- $(PY) tests/e2e/monitoring_smoke.py

# Issue 16: PgBouncer (transaction mode) and a streaming replica, for real. test-pgbouncer runs the
# integration tests (jobs, automation, a reconciliation run, the cockpit) through Debian's pgbouncer,
# installed on demand like promtool; test-replica builds a replica of the embedded cluster with the
# bundled pg_basebackup. bench-locks compares lease rows with advisory locks (bench/locks.py).
.PHONY: test-pgbouncer install-pgbouncer test-replica bench-locks
test-pgbouncer: $(VENV)/.installed-dev
	@command -v pgbouncer >/dev/null 2>&1 || test -x /usr/sbin/pgbouncer || $(MAKE) --no-print-directory install-pgbouncer
	$(PY) -m project.pgbouncer_rig $(PYTEST_ARGS)

install-pgbouncer:
	@command -v apt-get >/dev/null 2>&1 || { echo "pgbouncer is missing and there is no apt-get: install PgBouncer"; exit 1; }
	$(SUDO) apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq --no-install-recommends pgbouncer
	@# The package also starts (on systemd hosts) a PgBouncer on 6432: the test starts its own.
	@if command -v systemctl >/dev/null 2>&1; then $(SUDO) systemctl disable --now pgbouncer >/dev/null 2>&1 || true; fi

test-replica: $(VENV)/.installed-dev
	$(PY) -m project.replica_rig $(PYTEST_ARGS)

bench-locks: $(VENV)/.installed-dev
	$(BENCH) $(PY) bench/locks.py

clean-venv:
	rm -rf $(VENV)
