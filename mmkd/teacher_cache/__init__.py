"""The teacher cache: the frozen teacher's outputs for a corpus split, computed once, memory-mapped.

Per distinct English sentence (`src`): the token states of the teacher's chosen layer at the
positions training reads (the collator's teacher_token_mask: no [CLS], [SEP], [UNK] or padding), in
float16, and the sentence embedding (the teacher's pooling). `build_teacher_cache` writes it
(resumable, one slice of shards per data-parallel rank, checksums verified at build and on a rerun);
`TeacherCache.open` checks it against the current teacher, max_length and corpus split (sizes and
manifest only; `verify` hashes every file); `TeacherCache.lookup(batch)` serves it in the layout of
`Teacher.encode`, and `CachedTeacherCollator` does that inside the DataLoader's workers. Run
`python -m mmkd.teacher_cache --help` or `mmkd cache-teacher`.
"""

from mmkd.teacher_cache.build import BuildSummary, build_teacher_cache
from mmkd.teacher_cache.reader import TeacherCache

__all__ = ["BuildSummary", "TeacherCache", "build_teacher_cache"]
