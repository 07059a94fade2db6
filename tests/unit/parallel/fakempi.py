"""An in-process communicator for the parallel/ unit tests: the ranks of a World are
threads of this process (or one test playing several of them).

It has what lrmpi calls and nothing more, with MPI's rules where lrmpi relies on
them: messages from one rank to another are matched in the order they were sent
(per tag), pickled messages travel as pickles, buffer messages by value (sent
eagerly, like MPI's eager protocol), a receive buffer may be longer than the
message, broadcasts match by the order they are posted. Status objects and the
ANY_* constants are mpi4py's own, so protocol.py runs unchanged.
"""
import pickle
import threading
import time

import numpy as np
from mpi4py import MPI


class Aborted(BaseException):
    """Comm.Abort was called: the job ends here (like the process, nothing catches it)."""


class World:
    def __init__(self, size):
        self.size = size
        self.cond = threading.Condition()
        self.queues = {(s, d): [] for s in range(size) for d in range(size)}
        self.bcasts = []                      # the root's broadcasts, in order
        self.posted = [0] * size              # broadcasts each rank has posted
        self.aborted = None
        self.sent = []                        # (source, dest, tag) of every message
        self.comms = [Comm(self, r) for r in range(size)]


class Request:
    def __init__(self, world, test=None):
        self.world, self._test = world, test
        self.done, self.value, self.cancelled = test is None, None, False

    def Test(self):
        if not self.done:
            self.done, self.value = self._test()
        return self.done

    def Wait(self):
        while not self.Test():
            if self.world.aborted is not None:  # the job ended: so does this rank
                raise Aborted(self.world.aborted)
            time.sleep(1e-4)
        return self.value

    def Cancel(self):
        self.cancelled = self.done = True

    def test(self):
        return self.Test(), self.value


class Comm:
    def __init__(self, world, rank):
        self.world, self.rank = world, rank
        self.recvs = []  # posted nonblocking receives not yet matched, in posting order

    def Get_rank(self):
        return self.rank

    def Get_size(self):
        return self.world.size

    def Abort(self, code=1):
        self.world.aborted = code
        raise Aborted(code)

    # --- sending ---
    def _put(self, dest, tag, kind, payload):
        with self.world.cond:
            self.world.queues[(self.rank, dest)].append((tag, kind, payload))
            self.world.sent.append((self.rank, dest, tag))
            self.world.cond.notify_all()

    def send(self, obj, dest, tag):
        self._put(dest, tag, "obj", pickle.dumps(obj))

    def isend(self, obj, dest, tag):
        self.send(obj, dest, tag)
        return Request(self.world)

    def Send(self, buf, dest, tag):
        self._put(dest, tag, "buf", np.ascontiguousarray(buf).tobytes())

    def Isend(self, buf, dest, tag):
        self.Send(buf, dest, tag)
        return Request(self.world)

    # --- receiving ---
    def _find(self, source, tag):
        """(source, index) of the first message from `source` with `tag`, or None."""
        sources = range(self.world.size) if source == MPI.ANY_SOURCE else [source]
        for s in sources:
            for i, (t, _, _) in enumerate(self.world.queues[(s, self.rank)]):
                if tag in (MPI.ANY_TAG, t):
                    return s, i
        return None

    def iprobe(self, source, tag, status=None):
        if self.world.aborted is not None:  # the job ended: so does this rank
            raise Aborted(self.world.aborted)
        with self.world.cond:
            found = self._find(source, tag)
            if found is not None and status is not None:
                s, i = found
                status.Set_source(s)
                status.Set_tag(self.world.queues[(s, self.rank)][i][0])
            return found is not None

    Iprobe = iprobe

    def _take(self, source, tag, block=True):
        with self.world.cond:
            while (found := self._find(source, tag)) is None:
                if not block:
                    return None
                if self.world.aborted is not None:
                    raise Aborted(self.world.aborted)
                self.world.cond.wait(0.01)
            s, i = found
            return self.world.queues[(s, self.rank)].pop(i)

    def recv(self, source, tag, status=None):
        _, kind, payload = self._take(source, tag)
        assert kind == "obj", "a buffer message received as a pickled object"
        return pickle.loads(payload)

    def _copy(self, message, buf):
        _, kind, payload = message
        assert kind == "buf", "a pickled message received into a buffer"
        flat = buf.reshape(-1).view(np.uint8)
        assert len(payload) <= flat.size, "message longer than the receive buffer"
        flat[:len(payload)] = np.frombuffer(payload, np.uint8)

    def Recv(self, buf, source, tag):
        self._copy(self._take(source, tag), buf)

    def _posted(self, source, tag, deliver):
        """A nonblocking receive. MPI matches messages to receives in the order they
        were posted, not tested: testing one of two receives from one source first must
        not let it take the message the earlier one is owed (one thread's Test between
        a worker's two sends did, here, before)."""
        req = Request(self.world, None)
        req.done, req.key, req.deliver = False, (source, tag), deliver

        def test():
            with self.world.cond:
                for r in list(self.recvs):
                    if r.done or r.key != req.key:
                        continue
                    message = self._take(source, tag, block=False)
                    if message is None:
                        break
                    r.done, r.value = True, r.deliver(message)
                    self.recvs.remove(r)
                    if r is req:
                        break
                self.recvs = [r for r in self.recvs if not r.done]
            return req.done, req.value
        req._test = test
        with self.world.cond:
            self.recvs.append(req)
        return req

    def Irecv(self, buf, source, tag):
        return self._posted(source, tag, lambda message: self._copy(message, buf))

    def irecv(self, source, tag):
        return self._posted(source, tag, lambda message: pickle.loads(message[2]))

    # --- broadcasts from rank 0, matched by the order they are posted ---
    def Ibcast(self, buf, root=0):
        assert root == 0
        with self.world.cond:
            index = self.world.posted[self.rank]
            self.world.posted[self.rank] += 1
            if self.rank == 0:
                self.world.bcasts.append(np.ascontiguousarray(buf).tobytes())
                self.world.cond.notify_all()
                return Request(self.world)

        def test():
            with self.world.cond:
                if index >= len(self.world.bcasts):
                    return False, None
                payload = self.world.bcasts[index]
            buf.reshape(-1).view(np.uint8)[:] = np.frombuffer(payload, np.uint8)
            return True, None
        return Request(self.world, test)


def run_ranks(world, serve, ranks=None):
    """Start `serve(comm)` on a thread for each of `ranks` (default: all but 0);
    returns a function that joins them and gives {rank: what serve returned}
    (re-raising what a thread raised)."""
    ranks = range(1, world.size) if ranks is None else ranks
    results, threads = {}, []

    def run(r):
        try:
            results[r] = serve(world.comms[r])
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            results[r] = exc

    for r in ranks:
        t = threading.Thread(target=run, args=(r,), daemon=True)
        t.start()
        threads.append(t)

    def join(timeout=60):
        for t in threads:
            t.join(timeout)
            assert not t.is_alive(), "a rank did not finish"
        for r, value in results.items():
            if isinstance(value, BaseException):
                raise value
        return results
    return join
