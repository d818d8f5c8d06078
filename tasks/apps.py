from django.apps import AppConfig


class TasksConfig(AppConfig):
    name = "tasks"
    verbose_name = "Tasks"

    def ready(self) -> None:
        from django.core.checks import register

        from project.seeding import register_seeder
        from tasks.seed import seed_tasks
        from tasks.webhooks import check_signing_secret

        register(check_signing_secret, deploy=True)

        register_seeder("tasks", seed_tasks, help="work items (projects are created as needed)")
