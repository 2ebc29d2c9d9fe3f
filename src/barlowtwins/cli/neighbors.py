"""``barlowtwins neighbors``: the k images of an embeddings file most similar (cosine) to query images."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from barlowtwins.cli.common import add_strict_data_arg, report_skipped
from barlowtwins.cli.embed import add_model_args, setup_from_args
from barlowtwins.data.bad_files import collect_bad_files, readable, refuse_unreadable
from barlowtwins.errors import ConfigError, DataError
from barlowtwins.evaluate.embeddings import (
    contact_sheet,
    cosine_neighbors,
    embed_image_files,
    feature_dim,
    read_embeddings,
)
from barlowtwins.runtime.files import check_writable


def add_parser(sub, name: str) -> argparse.ArgumentParser:
    p = sub.add_parser(name, allow_abbrev=False, help="find the most similar images in an embeddings file",
                       description="Embed the query images with the backbone and preprocessing the embeddings file "
                                   "was written with (its .meta.json), rank the file's images by cosine similarity "
                                   "and print the k best; --sheet draws a contact sheet (query, then neighbours).")
    p.add_argument("--embeddings", required=True, metavar="FILE", help="emb.npy written by barlowtwins embed")
    p.add_argument("--query", required=True, nargs="+", metavar="IMG", help="query image file(s)")
    p.add_argument("--k", type=int, default=5, help="neighbours per query (default: 5)")
    p.add_argument("--sheet", default=None, metavar="PNG", help="write a contact sheet of queries and neighbours")
    add_model_args(p, required=False)
    add_strict_data_arg(p)
    p.set_defaults(batch_size=64)
    return p


def run(args: argparse.Namespace) -> int:
    with collect_bad_files() as bad:
        code = _run(args)
    report_skipped(bad.as_list())
    return code


def _run(args: argparse.Namespace) -> int:
    if args.k < 1:
        raise ConfigError(f"--k must be at least 1, got {args.k}")
    missing = [q for q in args.query if not Path(q).is_file()]
    if missing:
        raise DataError(f"query image {missing[0]} does not exist; check the path")
    if args.sheet:
        check_writable(args.sheet, "--sheet")  # before any work, not after it
    emb = read_embeddings(args.embeddings)
    if args.strict_data:
        refuse_unreadable(list(args.query))
    meta = emb.meta
    # The preprocessing always follows the embeddings file; the architecture too unless --checkpoint names another.
    preprocessing = {"image_size": meta.get("image_size"), "mean": meta.get("mean"), "std": meta.get("std")}
    arch = {} if args.checkpoint else (meta.get("arch") or {})
    if not args.checkpoint:
        if not meta.get("checkpoint"):
            raise DataError(f"{args.embeddings}'s metadata names no checkpoint; pass --checkpoint with the backbone "
                            "it was written with")
        # The network the metadata describes must give the array's width: checked before anything is built.
        dim = feature_dim({k: getattr(args, k, None) or arch.get(k) for k in ("backbone", "stem", "width")})
        if dim is not None and dim != emb.features.shape[1]:
            raise DataError(f"{args.embeddings} holds {emb.features.shape[1]}-dimensional features but its metadata "
                            f"describes a backbone with {dim}; the metadata is damaged: re-run barlowtwins embed, "
                            "or pass --checkpoint and the architecture flags it was written with")
    setup = setup_from_args(args, args.checkpoint or meta["checkpoint"], {**arch, **preprocessing})
    if args.checkpoint is None and meta.get("checkpoint_sha256") and \
            setup.checkpoint_sha256 != meta["checkpoint_sha256"]:
        raise ConfigError(f"the backbone at {meta['checkpoint']} changed since {args.embeddings} was written (a "
                          "running pretraining updates it); re-run barlowtwins embed, or pass --checkpoint to query "
                          "with another backbone")
    names = readable(list(args.query), "query images")  # an unreadable query is skipped and counted
    queries = embed_image_files(setup, names, args.batch_size)
    if queries.shape[1] != emb.features.shape[1]:
        raise ConfigError(f"the backbone gives {queries.shape[1]}-dimensional features but {args.embeddings} holds "
                          f"{emb.features.shape[1]}; pass the --checkpoint it was written with")
    sims, rows = cosine_neighbors(queries, torch.from_numpy(emb.features), args.k)
    found = []
    for q, s, r in zip(names, sims.tolist(), rows.tolist()):
        print(f"{q}:")
        found.append([(emb.entries[i], score) for i, score in zip(r, s)])
        for rank, (entry, score) in enumerate(found[-1], 1):
            print(f"  {rank}. {score:.4f}  {entry}")
    if args.sheet:
        if args.strict_data:  # the neighbours' files, before the sheet is drawn
            refuse_unreadable(list(dict.fromkeys(e for f in found for e, _ in f if Path(e).is_file())))
        path = contact_sheet(names, found, args.sheet, meta)
        print(f"contact sheet: {path}")
    return 0
