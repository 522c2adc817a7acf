"""The small version of `benchmarks/load.py`: a crowd on a real `python app.py` server gets the answers each
request gets alone, with no error and no growing memory; a full queue answers "busy" and the server goes on."""

from concurrent.futures import ThreadPoolExecutor

import pytest

from benchmarks.load import _free_port, _requests, crowd, start_server


@pytest.fixture
def server(tmp_path, request):
    port = _free_port()
    process = start_server(port, tmp_path / "server.log", queue_size=getattr(request, "param", None))
    yield f"http://127.0.0.1:{port}/", process
    process.terminate()
    process.wait(30)


def test_a_small_crowd_gets_what_each_request_gets_alone(server):
    url, process = server
    result = crowd(url, process.pid, visitors=6, total=30, every=10)
    assert result["answered"] == 30 and not result["errors"] and not result["busy"], result["errors"][:3]
    assert not result["mismatches"], result["mismatches"]
    assert all(result["latencies"][kind] for kind in ("describe", "visual", "text", "wild", "gallery"))
    # generous: the bound for 300 requests is 150 MB; 30 may still fill caches once
    assert result["memory"]["after the crowd"] - result["memory"]["after warm-up"] < 150, result["samples"]


@pytest.mark.parametrize("server", [1], indirect=True)
def test_a_full_queue_answers_busy_and_the_server_goes_on(server):
    from gradio_client import Client

    url, _ = server
    api, args, answer = _requests()["text"]
    Client(url, verbose=False, download_files=False).predict(*args(), api_name=api)  # warm

    def one(_):
        try:
            return answer(Client(url, verbose=False, download_files=False).predict(*args(), api_name=api))
        except Exception as err:  # noqa: BLE001
            return err

    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(one, range(8)))
    refused = [o for o in outcomes if isinstance(o, Exception)]
    assert refused and all("queue is full" in str(o).lower() for o in refused), refused
    answered = {o for o in outcomes if not isinstance(o, Exception)}
    assert len(answered) == 1  # the ones let in got the same answer
    alone = answer(Client(url, verbose=False, download_files=False).predict(*args(), api_name=api))
    assert answered == {alone}
