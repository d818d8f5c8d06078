from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("project", "0005_activitylog_indexes_for_reads"),
    ]

    operations = [
        migrations.CreateModel(
            name="Lease",
            fields=[
                ("name", models.CharField(max_length=200, primary_key=True, serialize=False)),
                ("holder", models.CharField(max_length=255)),
                ("acquired_at", models.DateTimeField()),
                ("expires_at", models.DateTimeField()),
            ],
        ),
    ]
