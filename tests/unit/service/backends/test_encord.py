"""EncordBackend against a fake ``/public`` endpoint that checks every request and keeps the rows: first push,
re-push (ours replaced, a person's object kept), bundles, retries, auth, and the real SDK on the same fake."""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from service.backends.encord import BearerAuth, EncordBackend, EncordConfig, EncordPush, SshKeyAuth
from service.backends.retry import BackendError, RetryPolicy
from service.convert.encord import EncordOntology
from service.pipeline.frames import MediaKind, SlotMeta
from service.pipeline.predictions import ItemPredictions
from service.pipeline.tracks import Track, TrackBox
from tests.builders import CAR_PERSON_MODEL, CAR_PERSON_ONTOLOGY_JSON, make_detections, make_result, with_tracks
from tests.fakes.encord_server import STAMP, FakeEncord
from tests.fakes.http import serving

TOKEN = "CANARY-encord-token-" + "z" * 24
SVC = "svc-preannotate@example.com"
MODEL = CAR_PERSON_MODEL
ONTOLOGY_JSON = CAR_PERSON_ONTOLOGY_JSON
ONTOLOGY = EncordOntology.from_json(ONTOLOGY_JSON)
WHEN = datetime(2025, 6, 1, 12, tzinfo=UTC)


@pytest.fixture
def fake() -> Iterator[FakeEncord]:
    app = FakeEncord(ontology=ONTOLOGY_JSON, token=TOKEN)
    with serving(app):
        yield app
    assert app.errors == [], app.errors


def backend(fake: FakeEncord, sleeps: list[float] | None = None, **config: Any) -> EncordBackend:
    retry = RetryPolicy(sleep=(sleeps if sleeps is not None else []).append, random=lambda: 0.5)
    cfg = EncordConfig(project_hash=fake.project_hash, domain=fake.base_url, created_by=SVC, **config)
    return EncordBackend(cfg, BearerAuth(TOKEN), retry=retry)


def image(boxes: list[list[float]], classes: list[int], name: str = "a.jpg") -> ItemPredictions:
    meta = SlotMeta(name, "0", MediaKind.IMAGE, (f"/d/{name}",), 1920, 1080, None, 1, 1)
    result = make_result(make_detections(boxes, [0.9] * len(boxes), classes), item=name, width=1920, height=1080)
    return ItemPredictions(name, (meta,), (result,))


def video() -> ItemPredictions:
    """A video with one track on 3 frames (its tracker ids filled, as a worker's predictions carry them)."""
    meta = SlotMeta("v.mp4", "0", MediaKind.VIDEO, ("/d/v.mp4",), 1280, 720, 25.0, 100, 3, 4.0)
    track = Track(1, "0", 0, tuple(TrackBox(f, f / 25, (10.0 * f, 0.0, 128 + 10.0 * f, 72.0), 0.8) for f in (0, 1, 2)))
    return with_tracks(ItemPredictions("v.mp4", (meta,), ()), [track])


def person_by_hand(obj_hash: str = "HAND0001") -> dict[str, Any]:
    return {
        "name": "Person",
        "color": "#FCDC00",
        "shape": "bounding_box",
        "value": "person",
        "createdAt": STAMP,
        "createdBy": "annotator@example.com",
        "confidence": 1.0,
        "objectHash": obj_hash,
        "featureHash": "persBBx1",
        "manualAnnotation": True,
        "lastEditedAt": STAMP,
        "lastEditedBy": "annotator@example.com",
        "boundingBox": {"h": 0.2, "w": 0.1, "x": 0.6, "y": 0.3},
    }


def test_first_push_creates_rows_and_writes_boxes(fake: FakeEncord) -> None:
    fake.add_image("img-1")
    fake.add_video("vid-1")
    item = video()
    with backend(fake) as be:
        results = be.push(
            [EncordPush("img-1", image([[0, 0, 192, 108]], [0])), EncordPush("vid-1", item)], MODEL, ONTOLOGY
        )
    assert [r.stats.objects for r in results] == [1, 1]
    assert [r.label_hash for r in results] == [fake.data["img-1"].label_hash, fake.data["vid-1"].label_hash]
    ((_, car),) = fake.objects("img-1")
    assert (car["featureHash"], car["boundingBox"], car["manualAnnotation"]) == (
        "carBBox1",
        {"h": 0.1, "w": 0.1, "x": 0.0, "y": 0.0},
        False,
    )
    frames = fake.objects("vid-1")
    assert [f for f, _ in frames] == ["0", "1", "2"]
    assert len({e["objectHash"] for _, e in frames}) == 1
    assert fake.calls == [("labelrowmetadata", "GET", 0), ("labelrow", "PUT", 2), ("labelrow", "POST", 2)]


def test_second_push_replaces_ours_and_keeps_a_persons_object(fake: FakeEncord) -> None:
    fake.add_image("img-1")
    with backend(fake) as be:
        be.push([EncordPush("img-1", image([[0, 0, 192, 108], [960, 0, 1152, 108]], [0, 1]))], MODEL, ONTOLOGY)
        fake.add_object_by_hand("img-1", person_by_hand())
        be.push([EncordPush("img-1", image([[0, 0, 384, 216]], [0]))], MODEL, ONTOLOGY)
        be.push([EncordPush("img-1", image([[0, 0, 384, 216]], [0]))], MODEL, ONTOLOGY)  # and once more
    entries = [e for _, e in fake.objects("img-1")]
    assert sorted((e["name"], e["manualAnnotation"]) for e in entries) == [("Car", False), ("Person", True)]
    assert [e["boundingBox"]["w"] for e in entries if e["name"] == "Car"] == [0.2]
    assert next(e for e in entries if e["name"] == "Person") == person_by_hand()
    assert fake.data["img-1"].saves == 3
    assert fake.calls[-3:] == [("labelrowmetadata", "GET", 0), ("labelrow", "GET", 1), ("labelrow", "POST", 1)]


def test_a_persons_edit_of_our_track_survives_a_rerun(fake: FakeEncord) -> None:
    fake.add_video("vid-1")
    item = video()
    with backend(fake) as be:
        be.push([EncordPush("vid-1", item)], MODEL, ONTOLOGY)
        row = fake.data["vid-1"].row
        assert row is not None
        unit = next(iter(row["data_units"].values()))
        unit["labels"]["1"]["objects"][0]["lastEditedBy"] = "annotator@example.com"  # moved in the editor
        before = copy.deepcopy(unit["labels"])
        (result,) = be.push([EncordPush("vid-1", item)], MODEL, ONTOLOGY)
    assert result.stats.edited_skipped == 1
    row = fake.data["vid-1"].row
    assert row is not None
    assert next(iter(row["data_units"].values()))["labels"] == before


def test_rows_are_saved_in_bundles(fake: FakeEncord) -> None:
    for i in range(5):
        fake.add_image(f"img-{i}")
    pushes = [EncordPush(f"img-{i}", image([[0, 0, 10, 10]], [0], name=f"{i}.jpg")) for i in range(5)]
    with backend(fake, bundle_size=2) as be:
        be.push(pushes, MODEL, ONTOLOGY)
    assert [n for q, m, n in fake.calls if (q, m) == ("labelrow", "POST")] == [2, 2, 1]
    assert all(r.saves == 1 for r in fake.data.values())


def test_rate_limits_and_server_errors_are_retried(fake: FakeEncord) -> None:
    fake.add_image("img-1")
    fake.fail_next(429, headers={"Retry-After": "3"})
    fake.fail_next(503)
    sleeps: list[float] = []
    with backend(fake, sleeps) as be:
        be.push([EncordPush("img-1", image([[0, 0, 10, 10]], [0]))], MODEL, ONTOLOGY)
    assert sleeps == [3.0, 1.0]  # Retry-After honoured, then jittered backoff (ceiling 2 s, jitter 0.5)
    assert fake.data["img-1"].saves == 1


def test_giving_up_is_a_retryable_backend_error(fake: FakeEncord) -> None:
    fake.add_image("img-1")
    fake.fail_next(503, times=5)
    with backend(fake) as be, pytest.raises(BackendError) as info:
        be.push([EncordPush("img-1", image([[0, 0, 10, 10]], [0]))], MODEL, ONTOLOGY)
    assert (info.value.status, info.value.retryable) == (503, True)


def test_bad_credentials_and_unknown_data_are_final(fake: FakeEncord) -> None:
    fake.add_image("img-1")
    cfg = EncordConfig(project_hash=fake.project_hash, domain=fake.base_url)
    with (
        EncordBackend(cfg, BearerAuth("wrong")) as be,
        pytest.raises(BackendError, match="AUTHENTICATION_ERROR") as info,
    ):
        be.push([EncordPush("img-1", image([[0, 0, 10, 10]], [0]))], MODEL, ONTOLOGY)
    assert info.value.retryable is False
    with backend(fake) as be, pytest.raises(BackendError, match="not in the project") as info:
        be.push([EncordPush("nope", image([[0, 0, 10, 10]], [0]))], MODEL, ONTOLOGY)
    assert info.value.retryable is False


def test_the_fake_refuses_rows_off_the_format(fake: FakeEncord) -> None:
    fake.add_image("img-1")
    with backend(fake) as be:
        (row,) = be.initialise_rows(["img-1"]).values()
        with pytest.raises(BackendError) as info:
            be.save_rows([row | {"confidence": 1.0}])
    assert info.value.status == 400
    assert fake.errors == ["POST /public: row: unknown fields ['confidence']"]
    fake.errors.clear()


def test_ssh_key_auth_signs_each_body(fake: FakeEncord) -> None:
    serialization = pytest.importorskip("cryptography.hazmat.primitives.serialization")
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    ).decode()
    auth = SshKeyAuth(pem)
    fake.token, fake.public_key_hex = None, auth.public_key_hex
    fake.add_image("img-1")
    cfg = EncordConfig(project_hash=fake.project_hash, domain=fake.base_url, created_by=SVC)
    with EncordBackend(cfg, auth) as be:
        be.push([EncordPush("img-1", image([[0, 0, 10, 10]], [0]))], MODEL, ONTOLOGY)
    assert fake.data["img-1"].saves == 1
    assert "PRIVATE" not in repr(auth)
    with pytest.raises(BackendError, match="cannot be read"):
        SshKeyAuth("-----BEGIN OPENSSH PRIVATE KEY-----\nCANARY\n-----END OPENSSH PRIVATE KEY-----\n")


def test_secrets_never_reach_the_logs(fake: FakeEncord, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    fake.add_image("img-1")
    fake.fail_next(503)
    with backend(fake) as be:
        be.push([EncordPush("img-1", image([[0, 0, 10, 10]], [0]))], MODEL, ONTOLOGY)
    wrong = EncordBackend(EncordConfig(fake.project_hash, domain=fake.base_url), BearerAuth(TOKEN + "x"))
    with wrong as be, pytest.raises(BackendError) as info:
        be.push([EncordPush("img-1", image([[0, 0, 10, 10]], [0]))], MODEL, ONTOLOGY)
    assert "retry 1/4" in caplog.text
    assert "saved 1 label rows" in caplog.text
    assert TOKEN not in caplog.text
    assert TOKEN not in str(info.value)
    assert TOKEN not in repr(BearerAuth(TOKEN))


def test_config_validates_bundle_size() -> None:
    with pytest.raises(ValueError, match="bundle_size"):
        EncordConfig(project_hash="p", bundle_size=1001)


def test_one_push_per_row(fake: FakeEncord) -> None:
    fake.add_image("img-1")
    push = EncordPush("img-1", image([[0, 0, 10, 10]], [0]))
    with backend(fake) as be, pytest.raises(ValueError, match="once per push"):
        be.push([push, push], MODEL, ONTOLOGY)
    assert fake.requests == []


def test_the_encord_sdk_speaks_to_the_same_fake(fake: FakeEncord) -> None:
    """encord 0.1.211's own client passes the fake's checks and reads what we saved: the fake (and so our
    client, which passes it too) matches the SDK's wire format. Skipped without the SDK."""
    pytest.importorskip("encord")
    from encord.client import EncordClientProject
    from encord.configs import BearerConfig
    from encord.http.bundle import Bundle
    from encord.http.querier import Querier
    from encord.objects import Object
    from encord.objects.coordinates import BoundingBoxCoordinates
    from encord.objects.ontology_labels_impl import LabelRowV2
    from encord.objects.ontology_structure import OntologyStructure
    from encord.ontology import Ontology
    from encord.orm.ontology import Ontology as OrmOntology

    fake.add_image("img-1")
    fake.add_image("img-2")
    with backend(fake) as be:
        be.push([EncordPush("img-1", image([[0, 0, 192, 108]], [0]))], MODEL, ONTOLOGY)

    config = BearerConfig(TOKEN, domain=fake.base_url)
    client = EncordClientProject(querier=Querier(config, "project", fake.project_hash), config=config, api_client=None)  # type: ignore[arg-type]
    structure = OntologyStructure.from_dict(ONTOLOGY_JSON)
    ontology = Ontology(OrmOntology("t", structure, "h", WHEN, WHEN), None)  # type: ignore[arg-type]
    metas = client.list_label_rows(data_hashes=["img-1", "img-2"], include_uninitialised_labels=True)
    rows = {m.data_hash: LabelRowV2(m, client, ontology) for m in metas}
    with Bundle() as bundle:
        for row in rows.values():
            row.initialise_labels(bundle=bundle)
    # Ours, as the SDK reads it back.
    (ours,) = rows["img-1"].get_object_instances()
    (annotation,) = ours.get_annotations()
    assert (annotation.manual_annotation, annotation.created_by, annotation.confidence) == (False, SVC, 0.9)
    assert ours.get_annotation(0).coordinates == BoundingBoxCoordinates(
        height=0.1, width=0.1, top_left_x=0.0, top_left_y=0.0
    )
    # A person adds a box with the SDK; the SDK's save goes through the same checks.
    person = structure.get_child_by_hash("persBBx1", type_=Object).create_instance()
    person.set_for_frames(BoundingBoxCoordinates(height=0.2, width=0.1, top_left_x=0.6, top_left_y=0.3), frames=0)
    rows["img-1"].add_object_instance(person)
    with Bundle() as bundle:
        for row in rows.values():
            row.save(bundle=bundle)
    assert fake.data["img-1"].saves == 2
    assert fake.data["img-2"].saves == 1
    # Our re-run keeps the SDK-made (manual) object.
    with backend(fake) as be:
        be.push([EncordPush("img-1", image([[0, 0, 192, 108]], [0]))], MODEL, ONTOLOGY)
    assert sorted(e["manualAnnotation"] for _, e in fake.objects("img-1")) == [False, True]
