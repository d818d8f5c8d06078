"""Application-side pools of every live process (published to Redis by project.poolstats), and
PgBouncer's pools when Opsdeck connects through one."""

import logging

from django.conf import settings

logger = logging.getLogger("opsdeck.monitoring")


def application_pools() -> dict:
    from project.poolstats import live_pool_stats

    try:
        processes = sorted(live_pool_stats(), key=lambda row: (row.get("role", ""), row.get("process", "")))
    except Exception as exc:  # Redis down: the page says so instead of failing
        logger.warning("pool stats unavailable", extra={"error": repr(exc)})
        return {"available": False, "error": f"{type(exc).__name__}: {exc}", "processes": [], "totals": {}}
    totals = {
        "processes": len(processes),
        "size": sum(row.get("size") or 0 for row in processes),
        "max_size": sum(row.get("max_size") or 0 for row in processes),
        "waiting": sum(row.get("waiting") or 0 for row in processes),
        "timeouts": sum(row.get("timeouts") or 0 for row in processes),
    }
    in_use = sum((row.get("size") or 0) - (row.get("available") or 0) for row in processes)
    totals["in_use"] = in_use
    totals["usage_ratio"] = in_use / totals["max_size"] if totals["max_size"] else None
    totals["max_usage_ratio"] = max((row.get("usage_ratio") or 0 for row in processes), default=None)
    return {
        "available": True,
        "processes": processes,
        "totals": totals,
        "threshold": settings.MONITORING_POOL_USAGE_MAX,
    }


def pgbouncer_pools() -> dict:
    """SHOW POOLS on PgBouncer's admin console, when PGBOUNCER_ADMIN_URL is set."""
    url = settings.PGBOUNCER_ADMIN_URL
    if not url:
        return {"configured": False, "pools": []}
    import psycopg

    try:
        # The admin console speaks only the simple query protocol and has no transactions.
        with psycopg.connect(url, autocommit=True, connect_timeout=2, prepare_threshold=None) as conn:
            cursor = conn.execute("SHOW POOLS")
            columns = [column.name for column in cursor.description]
            pools = [dict(zip(columns, row, strict=True)) for row in cursor.fetchall()]
    except Exception as exc:
        return {"configured": True, "error": f"{type(exc).__name__}: {exc}", "pools": []}
    return {"configured": True, "pools": pools}
