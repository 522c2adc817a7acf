"""One engine behind every road (issue 21): the predictor's answers, the engine's answers one request at a
time and the engine's answers with 16 requests of every task in one decoding batch are the same tokens,
the same pixels and the same scores (up to float rounding)."""

import pytest

from kptllm.decoding.engine import Request, SupportCache
from kptllm.protocols.protocol import Task


def _same(a, b, what):
    assert [r.raw for r in a] == [r.raw for r in b], what
    assert [r.xy for r in a] == [r.xy for r in b], what
    assert [r.text for r in a] == [r.text for r in b], what
    assert [r.score for r in a] == pytest.approx([r.score for r in b], abs=1e-5), what


def _mixed_requests(coco_person, visible, others):
    """16 requests over several images: text, semantic, visual 1- and 5-shot, visual + text."""
    from tests.helpers import offset_supports

    supports = offset_supports(coco_person, visible)
    names = [n for n, _ in visible]
    points = [xy for _, xy in visible]
    queries = [(coco_person.image, coco_person.bbox)] + [(i.image, i.bbox) for i in others]
    five = ([s.image for s in supports] * 3)[:5], ([s.points for s in supports] * 3)[:5], ([s.bbox for s in supports] * 3)[:5]
    one = [supports[0].image], [supports[0].points], [supports[0].bbox]
    hidden = [supports[1].image, supports[0].image], [[None] + supports[1].points[1:], supports[0].points], \
        [supports[1].bbox, supports[0].bbox]
    requests = []
    for k in range(16):
        image, box = queries[k % len(queries)]
        kind = k % 5
        if kind == 0:
            requests.append(Request(image, box, Task.TEXT, names[: 2 + k % 4]))
        elif kind == 1:  # the points of coco_person, asked on its own crop (they must lie in it)
            requests.append(Request(coco_person.image, coco_person.bbox, Task.SEMANTIC, [None] * len(points[k % 3:]),
                                    points=points[k % 3:]))
        elif kind == 2:
            requests.append(Request(image, box, Task.VISUAL, [None] * len(points), supports=one, support_key="one"))
        elif kind == 3:
            requests.append(Request(image, box, Task.VISUAL, [None] * len(points), supports=five if k % 2 else hidden,
                                    support_key="five" if k % 2 else "hidden"))
        else:
            requests.append(Request(image, box, Task.VISUAL_TEXT, names[:3],
                                    supports=([one[0][0]], [one[1][0][:3]], [one[2][0]]), support_key="named"))
    return requests


def _copy(request):
    return Request(request.image, request.bbox, request.task, list(request.texts), points=request.points,
                   supports=request.supports, support_key=request.support_key)


def _through_the_predictor(predictor, request):
    predictor.set_image(request.image, request.bbox)
    if request.task is Task.TEXT:
        return predictor.detect(request.texts)
    if request.task is Task.SEMANTIC:
        return predictor.describe(request.points)
    images, point_lists, boxes = request.supports
    names = None if request.task is Task.VISUAL else request.texts
    return predictor.detect_from_example(images, point_lists, support_bbox=boxes, names=names)


def test_predictor_engine_alone_and_engine_batched_agree_on_every_task(trained, coco_person, instances):
    predictor, visible = trained
    others = [i for i in instances if i.dataset in ("coco", "ap10k", "humanart") and i is not coco_person][:3]
    requests = _mixed_requests(coco_person, visible, others)
    assert {r.task for r in requests} == {Task.TEXT, Task.SEMANTIC, Task.VISUAL, Task.VISUAL_TEXT}
    together = predictor.engine.answer([_copy(r) for r in requests], SupportCache())
    assert len(together) == 16
    for k, request in enumerate(requests):
        alone = predictor.engine.answer([_copy(request)])[0]
        _same(together[k], alone, f"request {k} ({request.task.value}): batch 16 vs batch 1")
        _same(alone, _through_the_predictor(predictor, request), f"request {k} ({request.task.value}): engine vs predictor")
        assert len(alone) == len(request.texts) and [r.task for r in alone] == [request.task.value] * len(alone)
    # the answers depend on the request: the rows were not mixed up across images or supports
    assert [r.xy for r in together[0]] != [r.xy for r in together[1 * 5]]


def test_the_engine_checks_every_request_before_any_work(trained, coco_person):
    predictor, _ = trained
    calls = []
    hook = predictor.model.vision_model.register_forward_hook(lambda *a: calls.append(1))
    try:
        good = Request(coco_person.image, coco_person.bbox, Task.TEXT, ["nose"])
        bad = Request(coco_person.image, coco_person.bbox, Task.TEXT, ["nose [0.1, 0.2]"])  # brackets are the answer's
        with pytest.raises(ValueError):
            predictor.engine.answer([good, bad])
        with pytest.raises(ValueError, match="2 points but 1 texts"):
            predictor.engine.answer([Request(coco_person.image, coco_person.bbox, Task.SEMANTIC, [None],
                                             points=[(350, 100), (360, 110)])])
        assert calls == []  # no image was encoded
    finally:
        hook.remove()
    assert predictor.engine.answer([]) == []
