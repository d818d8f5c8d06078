from django.apps import AppConfig


class TasksConfig(AppConfig):
    name = "tasks"
    verbose_name = "Tasks"

    def ready(self) -> None:
        from project.seeding import register_seeder
        from tasks.seed import seed_tasks

        register_seeder("tasks", seed_tasks, help="work items (projects are created as needed)")
