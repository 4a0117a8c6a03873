"""The EEG2025 experiment model, in the document shape of the legacy project's
MongoDB experiment tracker (collections experiments, epochs, checkpoints), so code
written against that tracker reads synced data unchanged.

training_runs -> experiments, epoch_history -> epochs, model_checkpoints ->
checkpoints; subjects, cache_files and config keep the generic mapping from 0001.
Legacy rows are the truth: no index is unique (the legacy tables allow, for
instance, two epoch rows for the same run and epoch).
"""

VERSION = 2
DESCRIPTION = "EEG2025 experiment model: experiments, epochs, checkpoints"


def experiment(row, ctx):
    return {
        "run_id": row["run_id"],
        "challenge": row["challenge"],
        "status": row["status"],
        "model": {"name": row["model_name"]},
        "config": ctx.json_object(row["config"], "config"),
        "metrics": {
            "best_val_loss": row["best_val_loss"],
            "best_epoch": row["best_epoch"],
            "total_epochs": row["total_epochs"],
        },
        "start_time": ctx.datetime(row["start_time"], "start_time"),
        "end_time": ctx.datetime(row["end_time"], "end_time"),
        "notes": row["notes"],
    }


def epoch(row, ctx):
    return {
        "experiment_id": ctx.ref("training_runs", row["run_id"]),
        "run_id": row["run_id"],
        "epoch": row["epoch"],
        "metrics": {
            "train_loss": row["train_loss"],
            "val_loss": row["val_loss"],
            "learning_rate": row["learning_rate"],
        },
        "timing": {"duration_seconds": row["duration_seconds"]},
        "timestamp": ctx.datetime(row["timestamp"], "timestamp"),
    }


def checkpoint(row, ctx):
    return {
        "experiment_id": ctx.ref("training_runs", row["run_id"]),
        "run_id": row["run_id"],
        "epoch": row["epoch"],
        "metrics": {"val_loss": row["val_loss"]},
        "file": {"path": row["file_path"], "size_mb": row["file_size_mb"]},
        "is_best": ctx.boolean(row["is_best"], "is_best"),
        "timestamp": ctx.datetime(row["timestamp"], "timestamp"),
    }


def upgrade(model):
    model.map_table("training_runs", "experiments", build=experiment)
    model.map_table("epoch_history", "epochs", build=epoch)
    model.map_table("model_checkpoints", "checkpoints", build=checkpoint)

    model.create_index("experiments", [("challenge", 1), ("metrics.best_val_loss", 1)])
    model.create_index("experiments", [("status", 1)])
    model.create_index("experiments", [("start_time", -1)])
    model.create_index("experiments", [("run_id", 1)])
    model.create_index("epochs", [("experiment_id", 1), ("epoch", 1)])
    model.create_index("epochs", [("run_id", 1), ("epoch", 1)])
    model.create_index("epochs", [("timestamp", -1)])
    model.create_index("checkpoints", [("experiment_id", 1), ("epoch", -1)])
    model.create_index("checkpoints", [("is_best", 1)])
    model.create_index("checkpoints", [("run_id", 1)])
