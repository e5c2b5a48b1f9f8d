"""Process pools for host work beside the main process (MindRecord conversion, evaluation
post-processing), whose workers end when the parent dies."""
import multiprocessing
import os
import threading
import time


def _exit_with_parent(parent_pid):
    """Pool worker initializer: exit when the parent dies.

    A killed parent leaves its workers blocked on the task queue forever (they hold copies of its
    write end, so they never see EOF); a watcher thread ends them instead.
    """
    def watch():
        while os.getppid() == parent_pid:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()


def worker_pool(workers, start_method):
    """A ``multiprocessing.Pool`` of ``workers`` processes started with ``start_method``.

    "fork" starts instantly and re-imports nothing: for work before the process runs MindSpore
    kernels. "spawn" starts clean interpreters: for a parent whose runtime threads are busy (a
    forked child could inherit a lock held by one of them). Falls back to "spawn" where "fork" is
    missing.
    """
    if start_method not in multiprocessing.get_all_start_methods():
        start_method = "spawn"
    context = multiprocessing.get_context(start_method)
    return context.Pool(workers, initializer=_exit_with_parent, initargs=(os.getpid(),))
