"""Chat under load: eight people asking at once are all answered, each exactly as if alone."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from gradio_client import Client

from .test_ui_api import SYSTEM, settings, studio, wait_for  # noqa: F401 - studio is a fixture

USERS = 8


def test_eight_concurrent_chats_are_all_answered_alike(studio):  # noqa: F811
    client, state = studio
    client.predict(**settings(max_steps=40), api_name="/start_training")
    wait_for(client, lambda p: p["state"] == "completed")
    adapter = client.predict(None, api_name="/list_adapters")["value"]

    def ask(number: int) -> tuple[str, str]:
        own = Client(client.src, verbose=False)  # one browser each
        _, base, tuned = own.predict(message="你是谁？", adapter=adapter, model="", system=SYSTEM, base_history=[],
                                     tuned_history=[], max_new_tokens=32, temperature=0.7, seed=7,
                                     api_name="/chat_compare")
        return base[-1]["content"][0]["text"], tuned[-1]["content"][0]["text"]

    alone = ask(0)
    with ThreadPoolExecutor(USERS) as pool:
        answers = list(pool.map(ask, range(USERS)))
    assert len(answers) == USERS and all(base and tuned for base, tuned in answers)
    # the same prompt, sampling and seed: every user gets the answer a lone user gets, whoever else is asking
    assert answers == [alone] * USERS and alone[0] != alone[1]
