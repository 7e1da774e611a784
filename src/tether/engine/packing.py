"""Packing score requests into prefix trees: each distinct token prefix runs through the model once.

A request is a context and its continuations. The model must see the context, then each
continuation but its last token (the last token is only ever predicted, never a predictor). Those
sequences, for every request of a row, go into one token trie: a node is one token at one depth,
shared by every sequence with the same prefix up to it, so a context runs once for all its
continuations, and requests with a common prefix (MMLU's subject header) share it too.

The row is run as one sequence with a 4-D attention mask in which each node attends to exactly its
ancestors and itself, at position id = its depth. Every node then gets the hidden state it would have
had in its own plain sequence: attention only ever sees the node's own prefix, at the same positions.
Token ``t`` of a continuation is predicted by the node before it (the context's last node for
``t = 0``); requests, continuations or tokens that predict from the same node share one LM-head row.

Pure index bookkeeping (numpy), no model code: the transformers backend turns a ``PackedBatch``
into tensors.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from tether.engine.backend import EncodedScore


def request_tokens(request: EncodedScore) -> int:
    """Tokens the model runs for one request packed alone (its trie's size, before any sharing
    between continuations): the context and each continuation but its last token."""
    return len(request.context_ids) + sum(len(c) - 1 for c in request.continuation_ids)


@dataclass
class _Row:
    tokens: list[int] = field(default_factory=list)
    parents: list[int] = field(default_factory=list)  # -1 for a root
    depths: list[int] = field(default_factory=list)
    children: list[dict[int, int]] = field(default_factory=list)
    roots: dict[int, int] = field(default_factory=dict)

    def new_nodes(self, start: int, seq: list[int]) -> int:
        """How many nodes inserting ``seq`` below node ``start`` (-1: the root) would create."""
        node = start
        for i, tok in enumerate(seq):
            nxt = (self.roots if node < 0 else self.children[node]).get(tok)
            if nxt is None:
                return len(seq) - i
            node = nxt
        return 0

    def insert(self, start: int, seq: list[int]) -> list[int]:
        """Insert ``seq`` below ``start``; returns the node of each of its tokens."""
        path, node = [], start
        for tok in seq:
            table = self.roots if node < 0 else self.children[node]
            nxt = table.get(tok)
            if nxt is None:
                nxt = len(self.tokens)
                table[tok] = nxt
                self.tokens.append(tok)
                self.parents.append(node)
                self.depths.append(0 if node < 0 else self.depths[node] + 1)
                self.children.append({})
            path.append(nxt)
            node = nxt
        return path

    def request_cost(self, request: EncodedScore) -> int:
        """Nodes this request would add to the row (an upper bound: its continuations may share)."""
        shared_ctx = len(request.context_ids) - self.new_nodes(-1, request.context_ids)
        return request_tokens(request) - shared_ctx


@dataclass(frozen=True)
class PackedBatch:
    """Rows of equal width ``width`` (right-padded), ready to become tensors.

    ``input_ids``/``position_ids``: (rows, width); ``ancestors``: (rows, width, width) bool, True where
    the query node (dim 1) may attend the key node (dim 2); a padding node attends only itself.
    ``predictors``: flat indices (row * width + column) of the nodes whose LM-head row is needed,
    each once. Per scored token: ``token_predictor`` (index into ``predictors``), ``token_target``
    (the token id it must predict) and ``token_owner`` (which continuation, numbered over all
    requests in order, it belongs to). ``depths`` gives each node's position id, for sliding windows.
    """

    input_ids: np.ndarray
    position_ids: np.ndarray
    ancestors: np.ndarray
    predictors: np.ndarray
    token_predictor: np.ndarray
    token_target: np.ndarray
    token_owner: np.ndarray
    num_continuations: int
    row_lengths: np.ndarray  # real nodes per row; the rest of each row is padding

    @property
    def real_tokens(self) -> int:
        """Nodes actually run (without padding)."""
        return int(self.row_lengths.sum())

    def real_cells(self) -> np.ndarray:
        """Flat indices (row * width + column) of the real nodes, ascending."""
        width = self.input_ids.shape[1]
        columns = np.arange(width)
        return np.flatnonzero(columns[None, :] < self.row_lengths[:, None])


def plan_rows(requests: list[EncodedScore], max_row_tokens: int) -> list[list[int]]:
    """Greedy, in order: put each request in the current row while the row's trie stays within
    ``max_row_tokens`` nodes; a request larger than that gets a row of its own."""
    rows: list[list[int]] = []
    current, trie, size = [], _Row(), 0
    for i, req in enumerate(requests):
        cost = trie.request_cost(req)
        if current and size + cost > max_row_tokens:
            rows.append(current)
            current, trie, size = [], _Row(), 0
            cost = request_tokens(req)
        current.append(i)
        trie.insert(-1, req.context_ids)  # later requests of the row may share this context's prefix
        size += cost
    if current:
        rows.append(current)
    return rows


def pack(requests: list[EncodedScore], max_row_tokens: int, pad_id: int) -> PackedBatch:
    """Pack ``requests`` (in this order) into trie rows of at most ``max_row_tokens`` nodes each
    (a request larger than that alone in its row), right-padded to the widest row."""
    for req in requests:
        if not req.context_ids:
            raise ValueError("a score request needs a non-empty context (the engine substitutes EOS)")
        if any(not c for c in req.continuation_ids):
            raise ValueError("a score request's continuations must each have at least one token")
    row_plan = plan_rows(requests, max_row_tokens)
    tries: list[_Row] = []
    # per scored token: (row, node of the predictor), target, owner
    pred_row: list[int] = []
    pred_node: list[int] = []
    targets: list[int] = []
    owners: list[int] = []
    owner = 0
    owner_base = {}
    for i, req in enumerate(requests):
        owner_base[i] = owner
        owner += len(req.continuation_ids)
    for r, members in enumerate(row_plan):
        trie = _Row()
        for i in members:
            req = requests[i]
            ctx_path = trie.insert(-1, req.context_ids)
            for j, cont in enumerate(req.continuation_ids):
                cont_path = trie.insert(ctx_path[-1], cont[:-1])
                predictors = [ctx_path[-1], *cont_path]
                pred_row.extend([r] * len(cont))
                pred_node.extend(predictors)
                targets.extend(cont)
                owners.extend([owner_base[i] + j] * len(cont))
        tries.append(trie)

    width = max(len(t.tokens) for t in tries)
    n_rows = len(tries)
    input_ids = np.full((n_rows, width), pad_id, dtype=np.int64)
    position_ids = np.zeros((n_rows, width), dtype=np.int64)
    ancestors = np.zeros((n_rows, width, width), dtype=bool)
    for r, trie in enumerate(tries):
        n = len(trie.tokens)
        input_ids[r, :n] = trie.tokens
        position_ids[r, :n] = trie.depths
        _fill_ancestors(ancestors[r], trie.parents)
        idx = np.arange(n, width)
        ancestors[r, idx, idx] = True  # padding attends itself only: no empty softmax row

    flat = np.asarray(pred_row, dtype=np.int64) * width + np.asarray(pred_node, dtype=np.int64)
    predictors, token_predictor = np.unique(flat, return_inverse=True)
    return PackedBatch(
        input_ids=input_ids,
        position_ids=position_ids,
        ancestors=ancestors,
        predictors=predictors,
        token_predictor=token_predictor.reshape(-1),
        token_target=np.asarray(targets, dtype=np.int64),
        token_owner=np.asarray(owners, dtype=np.int64),
        num_continuations=owner,
        row_lengths=np.asarray([len(t.tokens) for t in tries], dtype=np.int64),
    )


def _fill_ancestors(out: np.ndarray, parents: list[int]) -> None:
    """``out[i, j]`` = node j is node i or one of its ancestors. Nodes are created in insertion
    order, so each inserted sequence's new nodes form a contiguous chain whose first node hangs
    below an earlier one: one block copy and one triangle per chain, not one copy per node."""
    n = len(parents)
    start = 0
    while start < n:
        end = start + 1
        while end < n and parents[end] == end - 1:
            end += 1
        # nodes start..end-1 form a chain below parents[start]
        parent = parents[start]
        if parent >= 0:
            out[start:end, : parent + 1] = out[parent, : parent + 1]
        length = end - start
        out[start:end, start:end] = np.tri(length, dtype=bool)
        start = end
