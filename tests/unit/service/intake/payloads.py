"""Webhook bodies shaped like the real ones (label_studio.md §7 capture, darwin_v2.md examples)."""

from __future__ import annotations

from typing import Any

LS_URL = "http://ls.example.com:8080"
PROJECT_TOKEN = "CANARY-ls-project-token-" + "p" * 16
IMAGE_CONFIG = """<View>
  <Image name="image" value="$image" zoom="true"/>
  <RectangleLabels name="label" toName="image">
    <Label value="car" background="green"/>
    <Label value="person" background="blue"/>
  </RectangleLabels>
</View>"""


def ls_task(task_id: int, image: str, *, project: int = 17, updated_at: str | None = None) -> dict[str, Any]:
    stamp = updated_at or f"2026-11-23T01:51:39.{task_id:06d}Z"
    return {
        "id": task_id,
        "data": {"image": image, "source_frame": 1, "external_id": f"cam1-frame-{task_id}"},
        "meta": {"source": "preannot-service"},
        "created_at": "2026-11-23T01:51:39.296906Z",
        "updated_at": stamp,
        "is_labeled": False,
        "total_predictions": 0,
        "project": project,
        "file_upload": None,
    }


def ls_tasks_created(*tasks: dict[str, Any], project: int = 17, label_config: str = IMAGE_CONFIG) -> dict[str, Any]:
    """A TASKS_CREATED delivery; ``project`` carries a token, as the real one does."""
    return {
        "action": "TASKS_CREATED",
        "tasks": list(tasks),
        "project": {
            "id": project,
            "title": "img-preannot",
            "label_config": label_config,
            "token": PROJECT_TOKEN,
            "task_data_password": None,
            "model_version": "yolo-v8n-2024-01",
        },
    }


V7_ITEM_ID = "0192f1a2-3b4c-7d5e-8f60-718293a4b5c6"


def darwin_item(urls: list[str], *, item_id: str = V7_ITEM_ID, annotations: list[Any] | None = None) -> dict[str, Any]:
    """A webhook-stage delivery: the item's Darwin JSON 2.0 with one image slot per URL."""
    return {
        "version": "2.0",
        "schema_ref": "https://darwin-public.s3.eu-west-1.amazonaws.com/darwin_json/2.0/schema.json",
        "item": {
            "name": "patient_0001_mammo",
            "path": "/screening/2024",
            "source_info": {
                "item_id": item_id,
                "dataset": {"name": "Mammo", "slug": "mammo", "dataset_management_url": "https://x/datasets/7/dm"},
                "team": {"name": "Acme", "slug": "acme"},
            },
            "slots": [
                {
                    "type": "image",
                    "slot_name": str(n),
                    "width": 512,
                    "height": 512,
                    "source_files": [{"file_name": url.rsplit("/", 1)[-1].split("?")[0], "url": url}],
                }
                for n, url in enumerate(urls)
            ],
        },
        "annotations": annotations or [],
    }
