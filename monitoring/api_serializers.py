"""Response shapes of /api/v1/database/performance/* (monitoring/api.py): the OpenAPI schema and
the serialization of what the selectors return."""

from rest_framework import serializers


class ProcessPoolSerializer(serializers.Serializer):
    process = serializers.CharField(help_text="<hostname>:<pid>")
    role = serializers.CharField()
    pid = serializers.IntegerField()
    hostname = serializers.CharField()
    size = serializers.IntegerField(allow_null=True)
    available = serializers.IntegerField(allow_null=True)
    waiting = serializers.IntegerField(allow_null=True)
    requests = serializers.IntegerField(allow_null=True)
    requests_waiting = serializers.IntegerField(allow_null=True)
    timeouts = serializers.IntegerField(allow_null=True)
    max_size = serializers.IntegerField(allow_null=True)
    usage_ratio = serializers.FloatField(allow_null=True)
    published_at = serializers.CharField()


class PoolTotalsSerializer(serializers.Serializer):
    processes = serializers.IntegerField()
    size = serializers.IntegerField()
    max_size = serializers.IntegerField()
    in_use = serializers.IntegerField()
    waiting = serializers.IntegerField()
    timeouts = serializers.IntegerField()
    usage_ratio = serializers.FloatField(allow_null=True)
    max_usage_ratio = serializers.FloatField(allow_null=True)


class ApplicationPoolsSerializer(serializers.Serializer):
    available = serializers.BooleanField()
    error = serializers.CharField(required=False)
    processes = ProcessPoolSerializer(many=True)
    totals = PoolTotalsSerializer(required=False)
    threshold = serializers.FloatField(required=False)


class PgBouncerSerializer(serializers.Serializer):
    configured = serializers.BooleanField()
    error = serializers.CharField(required=False)
    pools = serializers.ListField(child=serializers.DictField())


class PoolStatsSerializer(serializers.Serializer):
    application = ApplicationPoolsSerializer()
    pgbouncer = PgBouncerSerializer()


class ActivitySerializer(serializers.Serializer):
    pid = serializers.IntegerField()
    database = serializers.CharField(allow_null=True)
    user = serializers.CharField(allow_null=True)
    application_name = serializers.CharField(allow_null=True, allow_blank=True)
    client = serializers.CharField(allow_null=True)
    state = serializers.CharField(allow_null=True)
    wait_event_type = serializers.CharField(allow_null=True)
    wait_event = serializers.CharField(allow_null=True)
    xact_start = serializers.DateTimeField(allow_null=True)
    query_start = serializers.DateTimeField(allow_null=True)
    query_s = serializers.FloatField(allow_null=True)
    xact_s = serializers.FloatField(allow_null=True)
    query = serializers.CharField(allow_null=True, allow_blank=True)
    waiting_on_lock = serializers.BooleanField()
    blocked_by = serializers.ListField(child=serializers.IntegerField())


class ConnectionGroupSerializer(serializers.Serializer):
    application_name = serializers.CharField()
    state = serializers.CharField()
    connections = serializers.IntegerField()
    waiting_on_lock = serializers.IntegerField()
    longest_in_state_s = serializers.FloatField(allow_null=True)


class StateCountSerializer(serializers.Serializer):
    state = serializers.CharField()
    connections = serializers.IntegerField()


class ConnectionsSerializer(serializers.Serializer):
    max_connections = serializers.IntegerField()
    superuser_reserved_connections = serializers.IntegerField()
    client_connections = serializers.IntegerField()
    headroom = serializers.IntegerField()
    usage_ratio = serializers.FloatField(allow_null=True)
    by_state = StateCountSerializer(many=True)
    by_application = ConnectionGroupSerializer(many=True)
    longest_queries = ActivitySerializer(many=True)
    longest_transactions = ActivitySerializer(many=True)
    idle_in_transaction = ActivitySerializer(many=True)
    waiting_on_lock = ActivitySerializer(many=True)
    long_query_threshold_s = serializers.IntegerField()


class TableSerializer(serializers.Serializer):
    oid = serializers.IntegerField()
    schema = serializers.CharField()
    table = serializers.CharField()
    name = serializers.CharField(help_text="schema.table")
    size_unavailable = serializers.CharField(
        allow_null=True, help_text='why the sizes are missing ("size unavailable: locked by pid X")'
    )
    model = serializers.CharField(allow_null=True)
    partitioned = serializers.BooleanField()
    matview = serializers.BooleanField()
    partitions = serializers.IntegerField()
    rows_estimate = serializers.IntegerField()
    live_rows = serializers.IntegerField(allow_null=True)
    dead_rows = serializers.IntegerField(allow_null=True)
    dead_ratio = serializers.FloatField(allow_null=True)
    table_bytes = serializers.IntegerField(allow_null=True)
    index_bytes = serializers.IntegerField(allow_null=True)
    toast_bytes = serializers.IntegerField(allow_null=True)
    total_bytes = serializers.IntegerField(allow_null=True)
    bloat_bytes = serializers.IntegerField(allow_null=True)
    bloat_ratio = serializers.FloatField(allow_null=True, help_text="estimated bloat / table size, 0..1")
    seq_scan = serializers.IntegerField(allow_null=True)
    seq_tup_read = serializers.IntegerField(allow_null=True)
    idx_scan = serializers.IntegerField(allow_null=True)
    index_use_ratio = serializers.FloatField(allow_null=True)
    modified_since_analyze = serializers.IntegerField(allow_null=True)
    last_vacuum = serializers.DateTimeField(allow_null=True)
    last_autovacuum = serializers.DateTimeField(allow_null=True)
    last_analyze = serializers.DateTimeField(allow_null=True)
    last_autoanalyze = serializers.DateTimeField(allow_null=True)
    cache_hit_ratio = serializers.FloatField(allow_null=True)


class WraparoundTableSerializer(serializers.Serializer):
    oid = serializers.IntegerField()
    schema = serializers.CharField()
    table = serializers.CharField()
    name = serializers.CharField(help_text="schema.table")
    toast = serializers.BooleanField()
    xid_age = serializers.IntegerField()


class WraparoundSerializer(serializers.Serializer):
    xid_age = serializers.IntegerField()
    mxid_age = serializers.IntegerField()
    freeze_max_age = serializers.IntegerField()
    xid_limit = serializers.IntegerField()
    headroom = serializers.IntegerField()
    used_ratio = serializers.FloatField()
    status = serializers.CharField(help_text="green, amber (past autovacuum_freeze_max_age) or red (over half-way)")
    oldest_tables = WraparoundTableSerializer(many=True)


class SequenceSerializer(serializers.Serializer):
    schema = serializers.CharField()
    sequence = serializers.CharField()
    name = serializers.CharField(help_text="schema.sequence")
    table_schema = serializers.CharField(allow_null=True)
    last_value = serializers.IntegerField(allow_null=True)
    max_value = serializers.IntegerField()
    limit_value = serializers.IntegerField()
    increment_by = serializers.IntegerField()
    table = serializers.CharField(allow_null=True)
    column = serializers.CharField(allow_null=True)
    column_type = serializers.CharField(allow_null=True)
    used_ratio = serializers.FloatField(allow_null=True)
    near_overflow = serializers.BooleanField()


class DatabaseSerializer(serializers.Serializer):
    name = serializers.CharField()
    size_bytes = serializers.IntegerField()
    version = serializers.CharField()
    started_at = serializers.DateTimeField()
    active_connections = serializers.IntegerField()
    xact_commit = serializers.IntegerField()
    xact_rollback = serializers.IntegerField()
    deadlocks = serializers.IntegerField()
    temp_bytes = serializers.IntegerField()
    conflicts = serializers.IntegerField()


class DatabaseStatsSerializer(serializers.Serializer):
    database = DatabaseSerializer()
    connections = ConnectionsSerializer()
    largest_tables = TableSerializer(many=True)
    sequences = SequenceSerializer(many=True)
    wraparound = WraparoundSerializer()


class IndexSerializer(serializers.Serializer):
    oid = serializers.IntegerField()
    schema = serializers.CharField()
    table = serializers.CharField()
    index = serializers.CharField()
    name = serializers.CharField(help_text="schema.index")
    size_unavailable = serializers.CharField(allow_null=True)
    foreign_key = serializers.CharField(allow_null=True, help_text="foreign key whose columns lead this index")
    warnings = serializers.ListField(child=serializers.CharField())
    drop_sql = serializers.CharField(allow_blank=True, help_text="DROP INDEX for an index no model declares")
    method = serializers.CharField()
    # pg_get_indexdef() is NULL for an index dropped while the catalog was being read.
    definition = serializers.CharField(allow_null=True)
    columns = serializers.ListField(child=serializers.CharField())
    is_unique = serializers.BooleanField()
    is_primary = serializers.BooleanField()
    is_valid = serializers.BooleanField()
    partitions = serializers.IntegerField()
    size_bytes = serializers.IntegerField(allow_null=True)
    idx_scan = serializers.IntegerField()
    idx_tup_read = serializers.IntegerField()
    idx_tup_fetch = serializers.IntegerField()
    last_idx_scan = serializers.DateTimeField(allow_null=True)
    scans_per_day = serializers.FloatField()
    bloat_bytes = serializers.IntegerField(allow_null=True)
    bloat_ratio = serializers.FloatField(allow_null=True)
    flags = serializers.ListField(child=serializers.ChoiceField(choices=["unused", "duplicate", "invalid"]))
    duplicate_of = serializers.CharField(allow_null=True)
    duplicate_of_definition = serializers.CharField(allow_null=True)
    model = serializers.CharField(allow_null=True, help_text="app_label.Model behind the table")
    source = serializers.CharField(allow_null=True, help_text="Meta.indexes entry, field or constraint")
    fix_migration = serializers.CharField(allow_blank=True, help_text="migration operation that fixes the finding")


class MissingIndexTableSerializer(serializers.Serializer):
    schema = serializers.CharField()
    table = serializers.CharField()
    name = serializers.CharField(help_text="schema.table")
    model = serializers.CharField(allow_null=True)
    live_rows = serializers.IntegerField()
    seq_scan = serializers.IntegerField()
    idx_scan = serializers.IntegerField()
    seq_tup_read = serializers.IntegerField()
    index_use = serializers.FloatField(allow_null=True)


class IndexThresholdsSerializer(serializers.Serializer):
    unused_min_bytes = serializers.IntegerField()
    missing_index_min_rows = serializers.IntegerField()
    missing_index_min_use = serializers.FloatField()


class IndexUsageSerializer(serializers.Serializer):
    stats_since = serializers.DateTimeField()
    pgstattuple_installed = serializers.BooleanField()
    thresholds = IndexThresholdsSerializer()
    indexes = IndexSerializer(many=True)
    missing_index_tables = MissingIndexTableSerializer(many=True)


class BlocksSerializer(serializers.Serializer):
    hit = serializers.IntegerField()
    read = serializers.IntegerField()


class CacheStatsSerializer(serializers.Serializer):
    table = serializers.FloatField(allow_null=True, help_text="table cache hit ratio 0..1")
    index = serializers.FloatField(allow_null=True, help_text="index cache hit ratio 0..1")
    table_blocks = BlocksSerializer()
    index_blocks = BlocksSerializer()
    threshold = serializers.FloatField()
    performance_assessment = serializers.ChoiceField(choices=["excellent", "good", "fair", "poor", "unknown"])


class StatementSerializer(serializers.Serializer):
    queryid = serializers.IntegerField()
    query = serializers.CharField()
    origin = serializers.CharField(help_text="view or job named by the statement's SQL comment, or 'unattributed'")
    calls = serializers.IntegerField()
    rows = serializers.IntegerField()
    rows_per_call = serializers.FloatField(allow_null=True)
    total_exec_ms = serializers.FloatField()
    mean_exec_ms = serializers.FloatField(allow_null=True)
    lifetime_mean_exec_ms = serializers.FloatField(required=False, allow_null=True)
    new_in_window = serializers.BooleanField(required=False)
    shared_blks_hit = serializers.IntegerField()
    shared_blks_read = serializers.IntegerField()
    cache_hit_ratio = serializers.FloatField(allow_null=True)
    slow = serializers.BooleanField()


class OriginSerializer(serializers.Serializer):
    origin = serializers.CharField()
    statements = serializers.IntegerField()
    calls = serializers.IntegerField()
    total_exec_ms = serializers.FloatField()
    share = serializers.FloatField(allow_null=True)


class SlowThresholdSerializer(serializers.Serializer):
    mean_ms = serializers.IntegerField()
    min_calls = serializers.IntegerField()


class SlowQueriesSerializer(serializers.Serializer):
    available = serializers.BooleanField()
    message = serializers.CharField(required=False)
    order = serializers.CharField(required=False)
    window = serializers.CharField(required=False, allow_null=True)
    stats_reset = serializers.DateTimeField(required=False, allow_null=True)
    statements = StatementSerializer(many=True)
    by_origin = OriginSerializer(many=True)
    slow_threshold = SlowThresholdSerializer(required=False)


class PartitionSerializer(serializers.Serializer):
    name = serializers.CharField()
    bound = serializers.CharField()
    is_default = serializers.BooleanField()
    range_start = serializers.DateTimeField(allow_null=True)
    range_end = serializers.DateTimeField(allow_null=True)
    rows_estimate = serializers.IntegerField()
    size_bytes = serializers.IntegerField(allow_null=True)


class PartitionedTableSerializer(serializers.Serializer):
    oid = serializers.IntegerField()
    schema = serializers.CharField()
    table = serializers.CharField()
    name = serializers.CharField(help_text="schema.table")
    size_unavailable = serializers.CharField(allow_null=True)
    model = serializers.CharField(allow_null=True)
    partition_key = serializers.CharField()
    managed = serializers.BooleanField(help_text="kept by project.partitions")
    months_ahead = serializers.IntegerField(allow_null=True)
    status = serializers.ChoiceField(choices=["green", "amber", "red"])
    default_rows = serializers.IntegerField()
    rows_estimate = serializers.IntegerField()
    size_bytes = serializers.IntegerField()
    partitions = PartitionSerializer(many=True)


class MaterializedViewSerializer(serializers.Serializer):
    name = serializers.CharField()
    registered = serializers.BooleanField()
    refresh_every_s = serializers.IntegerField(allow_null=True)
    last_refreshed_at = serializers.DateTimeField(allow_null=True)
    last_duration_ms = serializers.IntegerField(allow_null=True)
    last_status = serializers.CharField(allow_null=True)
    staleness_s = serializers.FloatField(allow_null=True)
    stale = serializers.BooleanField(allow_null=True)
    populated = serializers.BooleanField(allow_null=True)
    size_bytes = serializers.IntegerField(allow_null=True)


class PartitionsSerializer(serializers.Serializer):
    partitioned_tables = PartitionedTableSerializer(many=True)
    materialized_views = MaterializedViewSerializer(many=True)


class ProcessSerializer(serializers.Serializer):
    pid = serializers.IntegerField()
    rss_bytes = serializers.IntegerField()
    threads = serializers.IntegerField()
    role = serializers.CharField()


class SystemMetricsSerializer(serializers.Serializer):
    cpu_percent = serializers.FloatField()
    cpu_count = serializers.IntegerField()
    load_average = serializers.ListField(child=serializers.FloatField())
    memory_total_bytes = serializers.IntegerField()
    memory_available_bytes = serializers.IntegerField()
    memory_percent = serializers.FloatField()
    swap_percent = serializers.FloatField()
    disk_total_bytes = serializers.IntegerField()
    disk_free_bytes = serializers.IntegerField()
    disk_percent = serializers.FloatField()
    process = ProcessSerializer()
    processes = serializers.IntegerField()


class ApprovalsBacklogSerializer(serializers.Serializer):
    count = serializers.IntegerField()
    oldest_age_s = serializers.FloatField(allow_null=True)
    p50_age_s = serializers.FloatField(allow_null=True)
    p95_age_s = serializers.FloatField(allow_null=True)
    amber_above = serializers.IntegerField()
    red_above = serializers.IntegerField()


class QueueSerializer(serializers.Serializer):
    queue = serializers.CharField()
    depth = serializers.IntegerField()


class QueuesSerializer(serializers.Serializer):
    available = serializers.BooleanField()
    error = serializers.CharField(required=False)
    queues = QueueSerializer(many=True)
    threshold = serializers.IntegerField(required=False)


class LastRunSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    status = serializers.CharField()
    started_at = serializers.DateTimeField()
    finished_at = serializers.DateTimeField(allow_null=True)
    duration_ms = serializers.IntegerField(allow_null=True)
    error = serializers.CharField(allow_blank=True)


class BeatJobSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    name = serializers.CharField()
    job = serializers.CharField()
    queue = serializers.CharField(allow_blank=True)
    enabled = serializers.BooleanField()
    schedule = serializers.CharField()
    kwargs = serializers.DictField()
    last_sent_at = serializers.DateTimeField(allow_null=True)
    total_run_count = serializers.IntegerField()
    next_run_at = serializers.DateTimeField(allow_null=True)
    last_run = LastRunSerializer(allow_null=True)


class CountSerializer(serializers.Serializer):
    count = serializers.IntegerField()
    capped = serializers.BooleanField(help_text="more rows than count")
    estimated = serializers.BooleanField(help_text="the planner's estimate, not a count")


class ExecutionCountsSerializer(serializers.Serializer):
    queued = CountSerializer()
    running = CountSerializer()
    stuck = CountSerializer()


class DeliveryCountsSerializer(serializers.Serializer):
    due = CountSerializer()
    failed = CountSerializer()
    dead = CountSerializer()


class StuckExecutionSerializer(serializers.Serializer):
    id = serializers.IntegerField()
    tenant_id = serializers.IntegerField()
    job_id = serializers.IntegerField()
    started_at = serializers.DateTimeField(allow_null=True)
    heartbeat_at = serializers.DateTimeField(allow_null=True)
    attempts = serializers.IntegerField()


class ReconciliationBacklogSerializer(serializers.Serializer):
    executions = ExecutionCountsSerializer()
    stuck_executions = StuckExecutionSerializer(many=True)
    stuck_after_s = serializers.IntegerField()
    unmatched_open = CountSerializer()
    webhook_deliveries = DeliveryCountsSerializer()


class BacklogSerializer(serializers.Serializer):
    approvals = ApprovalsBacklogSerializer()
    queues = QueuesSerializer()
    workers = serializers.DictField(allow_null=True, help_text="last celery inspect (active/reserved/scheduled)")
    beat_jobs = BeatJobSerializer(many=True)
    reconciliation = ReconciliationBacklogSerializer()


class ServiceSerializer(serializers.Serializer):
    ok = serializers.BooleanField(allow_null=True)
    detail = serializers.CharField()


class FigureSerializer(serializers.Serializer):
    key = serializers.CharField()
    label = serializers.CharField()
    value = serializers.FloatField(allow_null=True)
    display = serializers.CharField()
    status = serializers.ChoiceField(choices=["green", "amber", "red", "unknown"])
    threshold = serializers.CharField()
    source = serializers.CharField()


class RecommendationSerializer(serializers.Serializer):
    category = serializers.CharField()
    severity = serializers.ChoiceField(choices=["critical", "warning", "info", "success"])
    message = serializers.CharField()
    action = serializers.CharField()


class BlockerSerializer(serializers.Serializer):
    pid = serializers.IntegerField()
    state = serializers.CharField(allow_null=True)
    application_name = serializers.CharField(allow_null=True, allow_blank=True)
    user = serializers.CharField(allow_null=True)
    query = serializers.CharField(allow_null=True, allow_blank=True)
    xact_s = serializers.FloatField(allow_null=True)
    state_s = serializers.FloatField(allow_null=True)
    blocks_directly = serializers.IntegerField()
    blocks = serializers.IntegerField(help_text="sessions waiting on it, directly or behind another waiter")
    root = serializers.BooleanField(help_text="blocks others and waits on nobody")


class WaiterSerializer(serializers.Serializer):
    pid = serializers.IntegerField()
    application_name = serializers.CharField(allow_null=True, allow_blank=True)
    state = serializers.CharField(allow_null=True)
    wait_event_type = serializers.CharField(allow_null=True)
    wait_event = serializers.CharField(allow_null=True)
    waiting_s = serializers.FloatField(allow_null=True)
    query = serializers.CharField(allow_null=True, allow_blank=True)
    blocked_by = serializers.ListField(child=serializers.IntegerField())


class LockWaitsSerializer(serializers.Serializer):
    blockers = BlockerSerializer(many=True)
    waiting = WaiterSerializer(many=True)


class FullReportSerializer(serializers.Serializer):
    timestamp = serializers.CharField()
    locks = LockWaitsSerializer(help_text="read live on every request, unlike the minute's figures")
    services = serializers.DictField(child=ServiceSerializer())
    figures = FigureSerializer(many=True)
    data = serializers.DictField(
        help_text="the figures' sources: cache hit, connections, pools, queues, backlogs, "
        "partitions, views, tables, node, database"
    )
    recommendations = RecommendationSerializer(many=True)
