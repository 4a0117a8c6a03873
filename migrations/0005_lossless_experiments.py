"""The EEG2025 experiment model of 0002, lossless: each mapping states its inverse.

The documents keep 0002's shape (BSON dates, the config as an embedded document, a
real boolean), so readers see no change, and add what 0002 dropped: the legacy keys
`epochs.id` and `checkpoints.checkpoint_id` (0002 kept them only inside `_id`, a
hash), and `_orig`, the part of a value a conversion would lose, only where it would
(syncd.projection.inverse says which). Moving to this version rebuilds the three
collections from the legacy rows; `syncd verify --lossless` proves inverse(document)
== row on every row. 0002 stays as it was applied (an applied migration never changes).
"""

VERSION = 5
DESCRIPTION = "lossless EEG2025 model: epochs.id, checkpoints.checkpoint_id, _orig, inverses"


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


def experiment_row(doc, ctx):
    metrics = doc["metrics"]
    return {
        "run_id": doc["run_id"],
        "challenge": doc["challenge"],
        "model_name": doc["model"]["name"],
        "start_time": ctx.datetime(doc["start_time"], "start_time"),
        "end_time": ctx.datetime(doc["end_time"], "end_time"),
        "status": doc["status"],
        "best_val_loss": metrics["best_val_loss"],
        "best_epoch": metrics["best_epoch"],
        "total_epochs": metrics["total_epochs"],
        "config": ctx.json_object(doc["config"], "config"),
        "notes": doc["notes"],
    }


def epoch(row, ctx):
    return {
        "id": row["id"],
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


def epoch_row(doc, ctx):
    metrics = doc["metrics"]
    return {
        "id": doc["id"],
        "run_id": doc["run_id"],
        "epoch": doc["epoch"],
        "train_loss": metrics["train_loss"],
        "val_loss": metrics["val_loss"],
        "learning_rate": metrics["learning_rate"],
        "duration_seconds": doc["timing"]["duration_seconds"],
        "timestamp": ctx.datetime(doc["timestamp"], "timestamp"),
    }


def checkpoint(row, ctx):
    return {
        "checkpoint_id": row["checkpoint_id"],
        "experiment_id": ctx.ref("training_runs", row["run_id"]),
        "run_id": row["run_id"],
        "epoch": row["epoch"],
        "metrics": {"val_loss": row["val_loss"]},
        "file": {"path": row["file_path"], "size_mb": row["file_size_mb"]},
        "is_best": ctx.boolean(row["is_best"], "is_best"),
        "timestamp": ctx.datetime(row["timestamp"], "timestamp"),
    }


def checkpoint_row(doc, ctx):
    return {
        "checkpoint_id": doc["checkpoint_id"],
        "run_id": doc["run_id"],
        "epoch": doc["epoch"],
        "val_loss": doc["metrics"]["val_loss"],
        "file_path": doc["file"]["path"],
        "file_size_mb": doc["file"]["size_mb"],
        "timestamp": ctx.datetime(doc["timestamp"], "timestamp"),
        "is_best": ctx.boolean(doc["is_best"], "is_best"),
    }


def upgrade(model):
    model.map_table("training_runs", "experiments", build=experiment, inverse=experiment_row)
    model.map_table("epoch_history", "epochs", build=epoch, inverse=epoch_row)
    model.map_table("model_checkpoints", "checkpoints", build=checkpoint,
                    inverse=checkpoint_row)
