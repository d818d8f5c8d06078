import django.db.models.functions.text
from django.db import migrations, models


class Migration(migrations.Migration):
    """Execution.review: live counts of people's review next to the run's summary snapshot.
    Unmatched gains the reason currency_mismatch; reference_norm drops the zero padding of a number after letters (INV-0000109888 ==
    INV109888), so the exact pass finds such pairs instead of leaving them to similarity.

    PostgreSQL cannot change a stored generated column's expression: the column is dropped and
    added again (one rewrite of reconciliation_record; nothing indexes the column)."""

    dependencies = [("reconciliation", "0010_layout_unmatched_is_reconciliation_exception")]

    operations = [
        migrations.AddField(model_name="execution", name="review", field=models.JSONField(blank=True, default=dict)),
        migrations.AlterField(
            model_name="reconciliationexception",
            name="reason",
            field=models.CharField(
                choices=[
                    ("no_candidate", "No Candidate"),
                    ("amount_outside_drift", "Amount Outside Drift"),
                    ("currency_mismatch", "Currency Mismatch"),
                    ("ambiguous", "Ambiguous"),
                    ("low_confidence", "Low Confidence"),
                    ("rejected", "Rejected"),
                ],
                max_length=25,
            ),
        ),
        migrations.RemoveField(model_name="record", name="reference_norm"),
        migrations.AddField(
            model_name="record",
            name="reference_norm",
            field=models.GeneratedField(
                db_persist=True,
                expression=models.Func(
                    models.Func(
                        models.Func(
                            django.db.models.functions.text.Upper(models.F("reference")),
                            models.Value("^\\s*REF(ERENCE)?([^A-Z0-9]+|$)"),
                            models.Value(""),
                            function="regexp_replace",
                        ),
                        models.Value("[^A-Z0-9]+"),
                        models.Value(""),
                        models.Value("g"),
                        function="regexp_replace",
                    ),
                    models.Value("(^|[A-Z])0+(?=[0-9])"),
                    models.Value("\\1"),
                    models.Value("g"),
                    function="regexp_replace",
                ),
                output_field=models.CharField(max_length=128),
            ),
        ),
    ]
