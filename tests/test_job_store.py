"""The job store (job_store.py): the jobs table in SQLite, older databases gaining new columns, another
process holding the write lock, a row that cannot be read, the claim order, the damaged-file check."""

import sqlite3
import time

import pytest

from image_to_video.job_store import DONE, FAILED, QUEUED, RUNNING, Job, SQLiteJobStore, set_aside_if_damaged

from .helpers import database_locked


def test_an_older_database_gains_the_message_key_column(tmp_path):
    import sqlite3

    path = tmp_path / "old.sqlite3"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE jobs (id TEXT PRIMARY KEY, owner TEXT NOT NULL, state TEXT NOT NULL, params TEXT "
               "NOT NULL, image_path TEXT NOT NULL, created REAL NOT NULL, source TEXT, started REAL, finished REAL, "
               "stage TEXT, done INTEGER, total INTEGER, eta REAL, message TEXT, video_path TEXT, "
               "metadata_path TEXT, attempts INTEGER, worker TEXT)")
    db.commit()
    db.close()
    store = SQLiteJobStore(path)
    assert store.list() == []


def test_a_locked_database_raises_its_own_error_not_a_rollback_error(tmp_path):
    store = SQLiteJobStore(tmp_path / "jobs.sqlite3", timeout_s=0.1)
    with database_locked(store.path), pytest.raises(sqlite3.OperationalError) as raised:
        store.update("abc", state=FAILED)
    assert "database is locked" in str(raised.value)


def test_reads_go_on_while_another_process_holds_the_write_lock(tmp_path):
    store = SQLiteJobStore(tmp_path / "jobs.sqlite3", timeout_s=0.1)
    with database_locked(store.path):
        assert store.get("abc") is None and store.list() == [] and store.position("abc") is None


def test_a_job_that_cannot_be_read_fails_and_the_next_one_runs(parts, photo):
    jobs = parts()
    good = jobs.queue.submit(photo, "waves", owner="a")
    db = sqlite3.connect(jobs.store.path)
    db.execute("INSERT INTO jobs (id, owner, state, params, image_path, created) VALUES (?, ?, ?, ?, ?, ?)",
               ("broken", "a", QUEUED, "{not json", "/nowhere.png", good.created - 10))
    db.commit()
    db.close()
    jobs.worker.start()
    assert jobs.queue.wait(good.id, timeout=60).state == DONE
    assert jobs.store.get("broken").state == FAILED


def test_an_older_database_gains_the_retried_as_column(tmp_path):
    path = tmp_path / "old.sqlite3"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE jobs (id TEXT PRIMARY KEY, owner TEXT NOT NULL, state TEXT NOT NULL, params TEXT "
               "NOT NULL, image_path TEXT NOT NULL, created REAL NOT NULL, source TEXT, started REAL, finished REAL, "
               "stage TEXT, done INTEGER, total INTEGER, eta REAL, message TEXT, video_path TEXT, "
               "metadata_path TEXT, attempts INTEGER, worker TEXT, message_key TEXT)")
    db.execute("INSERT INTO jobs (id, owner, state, params, image_path, created) VALUES "
               "('old', 'a', 'failed', '{\"prompt\": \"waves\"}', '/gone.png', 1)")
    db.commit()
    db.close()
    store = SQLiteJobStore(path)
    assert store.get("old").retried_as is None and store.get("old").params == {"prompt": "waves"}


def queued(job_id: str, owner: str, created: float) -> Job:
    return Job(id=job_id, owner=owner, state=QUEUED, params={"prompt": "waves"}, image_path=f"/in/{job_id}.png",
               created=created)


def test_the_oldest_queued_job_is_claimed_first_and_an_owner_claims_only_its_own(tmp_path):
    store = SQLiteJobStore(tmp_path / "jobs.sqlite3")
    for number, owner in enumerate(["alice", "bob", "alice"]):
        store.add(queued(f"job{number}", owner, created=100.0 + number), max_queued=10)
    assert [store.position(f"job{number}") for number in range(3)] == [1, 2, 3]
    bobs = store.claim_next("box:11:1", owner="bob", ran_on={"name": "gpu1", "device": "cuda:1", "machine": "box"})
    assert (bobs.id, bobs.state, bobs.attempts, bobs.worker) == ("job1", RUNNING, 1, "box:11:1")
    assert store.get("job1").public()["worker"] == {"name": "gpu1", "device": "cuda:1", "machine": "box"}
    assert store.claim_next("box:12:1", owner="bob") is None  # bob has nothing else waiting
    assert store.claim_next("box:12:1").id == "job0"  # anyone's: the oldest
    assert (store.position("job0"), store.position("job2")) == (None, 1)


def test_a_sound_or_missing_database_is_never_set_aside(tmp_path):
    path = tmp_path / "jobs.sqlite3"
    assert set_aside_if_damaged(path) is None and not path.exists()
    SQLiteJobStore(path).add(queued("kept", "a", created=time.time()), max_queued=1)
    assert set_aside_if_damaged(path) is None
    assert SQLiteJobStore(path).get("kept").params == {"prompt": "waves"}
    assert not list(tmp_path.glob("*damaged*"))


def test_a_row_with_bytes_that_are_not_utf8_still_lists_with_the_others(tmp_path):
    store = SQLiteJobStore(tmp_path / "jobs.sqlite3")
    for job_id, created in (("good", 1.0), ("bad", 2.0)):
        store.add(Job(id=job_id, owner="page:a", state=QUEUED, params={"prompt": "waves"}, image_path="x.png",
                      created=created), max_queued=10)
    db = sqlite3.connect(store.path)  # as a broken tool or a hand edit would leave it
    db.execute("UPDATE jobs SET message = CAST(x'4f6b20ff21' AS TEXT), message_key = CAST(x'7bff' AS TEXT) "
               "WHERE id = 'bad'")
    db.commit()
    db.close()
    jobs = store.list(owner="page:a")
    assert [job.id for job in jobs] == ["bad", "good"]
    assert jobs[0].message == "Ok \ufffd!" and store.get("bad").localized_message("zh-CN") == "Ok \ufffd!"


def test_a_worker_takes_the_jobs_of_the_model_it_holds_first_but_none_waits_forever(tmp_path):
    store = SQLiteJobStore(tmp_path / "jobs.sqlite3")
    now = time.time()
    for job_id, model, age in (("wan1", "wan2.2-ti2v-5b", 30), ("xl1", "i2vgen-xl", 20), ("old", None, 10)):
        params = {"prompt": "p"} if model is None else {"prompt": "p", "model": model}  # "old": before jobs named one
        store.add(Job(id=job_id, owner="o", state=QUEUED, params=params, image_path="x.png", created=now - age),
                  max_queued=10)
    # Holding I2VGen-XL, its jobs go first (a job stored before models were named is I2VGen-XL's) ...
    assert [store.claim_next("w", prefer_model="i2vgen-xl").id for _ in range(2)] == ["xl1", "old"]
    assert store.claim_next("w", prefer_model="i2vgen-xl").id == "wan1"  # ... then the other model's
    store.add(Job(id="wan2", owner="o", state=QUEUED, params={"model": "wan2.2-ti2v-5b"}, image_path="x.png",
                  created=now - 200), max_queued=10)
    store.add(Job(id="xl2", owner="o", state=QUEUED, params={"model": "i2vgen-xl"}, image_path="x.png",
                  created=now - 1), max_queued=10)
    # A job that has waited longer than the patience goes first whatever model the worker holds.
    assert store.claim_next("w", prefer_model="i2vgen-xl", patience_s=120).id == "wan2"
