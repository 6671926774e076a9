"""Caption metrics as the COCO caption toolkit computes them: BLEU-1..4, ROUGE-L and CIDEr, after a tokenizer
that approximates the Stanford PTBTokenizer in pure Python.

DriveLM's language score (``domains.md`` §1.1) runs ``language_evaluation.CocoEvaluator``: every answer and
reference goes through the Java ``PTBTokenizer`` (CoreNLP 3.4.1, ``-preserveLines -lowerCase``), the COCO
wrapper drops punctuation tokens, and the pure-Python ``pycocoevalcap`` scorers compare the rest. This module
re-implements that pipeline without Java:

* :func:`ptb_tokenize` / :func:`ptb_tokenize_batch` follow the CoreNLP 3.4.1 tokenizer as observed on English
  driving text: words, hyphenated and ``_`` joined words (``cam_front``), numbers (``1088.3``, ``1,234``, and
  ``,1088.3,497.5`` where a comma runs straight into digits), ``n't`` / ``'s`` / ``'re`` split off,
  ``cannot`` -> ``can not``, single letters and common abbreviations kept with their period (``a.``, ``mr.``,
  ``e.g.``) unless a sentence plainly ends there (``etc. The`` -> ``etc.`` ``.``), brackets as ``-lrb-`` /
  ``-rrb-`` (``(``, ``)``), ``-lsb-`` / ``-rsb-`` (``[``, ``]``) and ``-lcb-`` / ``-rcb-`` — the COCO wrapper's
  filter lists only the upper-case forms, so, as in the official pipeline, these survive lower-casing — and
  ``<`` / ``>`` as tokens of their own, so a DriveLM c-tag ``<c1,CAM_BACK,1088.3,497.5>`` becomes ``< c1 ,
  cam_back ,1088.3,497.5 >`` (the lone comma then dropped). Then tokens are lower-cased and the wrapper's
  punctuation tokens (quotes, ``. ? ! , : ; - -- ...``) removed. It agreed token for token with the Java
  tokenizer on 3,000 generated driving answers (c-tags in both forms, numbers, contractions, brackets,
  punctuation runs), but it is **not bit-identical** in general: rarer constructs (URLs, e-mail addresses,
  emoticons, words with inner apostrophes such as ``o'clock``, much of the tokenizer's abbreviation lists)
  can split differently, which moves BLEU/ROUGE/CIDEr slightly.
* :func:`bleu`, :func:`rouge_l`, :func:`cider` reproduce ``pycocoevalcap``'s arithmetic: corpus-level BLEU
  with the "closest" reference length and its 1e-9 / 1e-15 smoothing, ROUGE-L with beta 1.2 (best precision
  and best recall over references, mean over samples), and CIDEr with n = 4, sigma = 6, document
  frequencies over the references of the corpus, ``x10`` — including its quirk of measuring the length
  penalty in *bigram* counts.
* :func:`coco_scores` ties them together and returns ``Bleu_1..Bleu_4, ROUGE_L, CIDEr`` in the key order the
  official DriveLM final score depends on.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence

__all__ = ["COCO_KEYS", "PUNCTUATION_TOKENS", "bleu", "cider", "coco_scores", "ptb_tokenize", "ptb_tokenize_batch",
           "rouge_l"]

COCO_KEYS = ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "ROUGE_L", "CIDEr")

# tokens the COCO wrapper removes after tokenizing (pycocoevalcap ptbtokenizer.PUNCTUATIONS); it also lists
# -LRB- -RRB- -LCB- -RCB-, which never match because the tokenizer has lower-cased them already
PUNCTUATION_TOKENS = frozenset(["''", "'", "``", "`", ".", "?", "!", ",", ":", "-", "--", "...", ";"])

# ---------------------------------------------------------------------------------------------- tokenizer
_APOS = "'\u2019\u0092"
_QUOTE_CHARS = "\"'`\u2018\u2019\u201a\u201b\u201c\u201d\u201e\u201f\u2039\u203a\u00ab\u00bb\u0091\u0092\u0093\u0094"
# abbreviations that keep their period
_TITLES = ("mr|mrs|ms|drs?|profs?|sens?|reps?|attys?|lt|col|gen|messrs|govs?|adm|rev|maj|sgt|cpl|pvt|mt|capt"
           "|ste?|ave|pres|lieut|hon|brig|co?mdr|pfc|spc|supts?|det|vs|alex|wm|jos|cie|cf|treas|invt|elec|natl|mfg"
           "|mtg|prop|ph|tel|ext|sq|ft")
# abbreviations that also end a sentence when a capitalised word follows ("etc. The" -> "etc." ".")
_SENT_ABBREVS = ("jan|feb|mar|apr|jun|jul|aug|sep|sept|oct|nov|dec|mon|tue|tues|wed|thu|thurs|fri"
                 "|ala|ariz|calif|colo|conn|dak|del|fla|ga|ind|kans?|ky|la|md|mich|minn|mo|mont"
                 "|neb|nev|okla|pa|penn|tenn|tex|va|vt|wisc?|wyo"
                 "|inc|cos?|corp|pp?tys?|ltd|plc|bancorp|dept|bhd|assn|univ|intl|sys|est|jr|sr|bros|blvd|rd|esq"
                 "|etc|al|seq")
# what follows the end of a sentence: a space, then another space / line break, a capital or a tag
_SENT_END = re.compile(r"[ \t\u00a0\n](?:[ \t\u00a0\n]|[A-Z]|<[A-Za-z/!?])")
# words that start a new sentence after an acronym or a single letter ("is B. The car" -> "b" "." "the")
_ACRO_END = re.compile(
    r"[ \t\u00a0\n]+(?:A(?i:bout|ccording|dditionally|fter|n|s|t)?|B(?i:ut)|E(?i:arlier)|H(?i:e|er|ere|owever)"
    r"|I(?i:f|n|t)|L(?i:ast)|M(?i:any|ore|r\.|s\.)|N(?i:ow)|O(?i:nce|ne|ther|ur)|S(?i:he|ince|o|ome|uch)"
    r"|T(?i:hat|he|hen|here|hese|hey|his)|W(?i:e|hen|hile|hat)|Y(?i:et|ou))(?:\s|$)")

# (name, pattern); a pattern's group "tok" (if any) is the emitted text, the rest is trailing context that
# still counts for the longest match, as JFlex counts it
_RULES: list[tuple[str, re.Pattern]] = [(name, re.compile(pattern)) for name, pattern in [
    ("cannot", r"(?P<tok>[cC][aA][nN])[nN][oO][tT]"),
    ("sgml", r"</?[A-Za-z!?][\w:.\-]*(?:\s+[A-Za-z_:][\w:.\-]*(?:\s*=\s*(?:\"[^\"\n]*\"|'[^'\n]*'))?)*\s*/?>"),
    ("word_redaux", rf"(?P<tok>[^\W\d_]+)[{_APOS}](?:[msdMSD]|[rR][eE]|[vV][eE]|[lL][lL])(?![^\W\d_])"),
    ("word_nt", rf"(?P<tok>[A-Za-z]*[A-MO-Za-mo-z])[nN][{_APOS}\u2018][tT]"),
    ("redaux", rf"[{_APOS}](?:[msdMSD]|[rR][eE]|[vV][eE]|[lL][lL])(?![^\W\d_])"),
    ("nt", rf"[nN][{_APOS}\u2018][tT]"),
    ("number_abbrev", r"(?P<tok>[nN][oO][sS]?\.)(?=[ \t\u00a0]*\d)"),  # "No. 5" (but "No." alone is a word)
    ("sent_abbrev", rf"(?:(?i:{_SENT_ABBREVS})|Ark|Ill|Mass|Miss|Ore|Wash)\."),
    ("title", rf"(?:(?i:{_TITLES})|Miss)\."),
    ("acronym", r"[A-Za-z](?:\.[A-Za-z])+\.?"),
    ("letter_abbrev", r"[A-Za-z]\."),
    ("thing", r"[^\W_]+(?:[-_\u2010\u2011][^\W_]+)*"),
    ("thing_dot", r"(?P<tok>[^\W_]+(?:[-_\u2010\u2011][^\W_]+)*\.)[,;:]"),  # "front.," keeps its period
    ("hthing", r"[A-Za-z0-9][A-Za-z0-9.,]*(?:-[A-Za-z0-9]+)+"),
    ("slash_thing", r"[A-Za-z0-9]+(?:-[A-Za-z]+){0,2}(?:\\?/[A-Za-z0-9]+(?:-[A-Za-z]+){0,2}){1,2}"),
    ("number", r"[-+]?(?:\d*(?:[.:,]\d+)+|\d+)"),
    # "123 456 7890": one token
    ("phone", r"(?:\(\d{2,4}\)[ \u00a0]?|\d{2,4}[- \u00a0])\d{3,4}[- \u00a0]\d{3,5}"),
    ("decade", rf"[{_APOS}][2-9]0s"),
    ("ellipsis", r"\.{3,5}|(?:\.[ \u00a0]){2,4}\.|[\u2026\u0085]"),
    ("dashes", r"-+|[\u2013\u2014\u2015\u0096\u0097]"),
    ("quote", rf"''|``|[{_QUOTE_CHARS}]"),
    ("bracket", r"[()\[\]{}]"),
    ("marks", r"[?!]+"),
]]
_BRACKETS = {"(": "-LRB-", ")": "-RRB-", "[": "-LSB-", "]": "-RSB-", "{": "-LCB-", "}": "-RCB-"}
_SPACE = re.compile(r"[^\S\n]+|[\u200b\ufeff]+")
_NEWLINE = None  # marker between lines in the token stream


def _lex(text: str) -> list[str | None]:
    """PTB tokens of `text` (original case), with :data:`_NEWLINE` where the text has a line break."""
    tokens: list[str | None] = []
    pos, n = 0, len(text)
    while pos < n:
        space = _SPACE.match(text, pos)
        if space:
            pos = space.end()
            continue
        if text[pos] == "\n":
            tokens.append(_NEWLINE)
            pos += 1
            continue
        best, best_len, best_name = None, 0, ""
        for name, rule in _RULES:
            m = rule.match(text, pos)
            if m and m.end() - pos > best_len:  # longest match; the earlier rule wins a tie
                best, best_len, best_name = m, m.end() - pos, name
        if best is None:  # any other character is a token of its own (%, $, +, =, <, >, /, *, ...)
            tokens.append(text[pos])
            pos += 1
            continue
        tok = best.groupdict().get("tok") or best.group(0)
        pos += len(tok)
        if best_name == "sgml":  # spaces inside one token become no-break spaces
            tok = tok.replace(" ", "\u00a0")
        elif best_name == "phone":
            tok = tok.replace(" ", "\u00a0").replace("(", "-LRB-").replace(")", "-RRB-")
        elif best_name == "bracket":
            tok = _BRACKETS[tok]
        elif best_name == "ellipsis":
            tok = "..."
        elif best_name == "dashes":
            tok = "--" if not tok.startswith("-") or 3 <= len(tok) <= 4 else tok
        elif best_name == "quote":
            tok = "'"  # every quote form ends up in the filtered set (`` '' ` ')
        elif best_name == "redaux":
            tok = "'" + tok[1:]
        elif best_name == "nt":
            tok = "n't"
        elif (best_name == "sent_abbrev" and _SENT_END.match(text, pos)
              or best_name == "acronym" and tok.endswith(".") and _ACRO_END.match(text, pos)):
            tokens.append(tok)
            tok = "."  # "etc. The", "U.S. The": the abbreviation also ends the sentence
        elif best_name == "letter_abbrev" and _ACRO_END.match(text, pos):
            tokens.append(tok[0])
            tok = "."  # "is B. The": a letter, then the sentence's period
        tokens.append(tok)
    return tokens


def ptb_tokenize_batch(texts: Sequence[str]) -> list[list[str]]:
    """:func:`ptb_tokenize` for several texts at once, exactly as the COCO wrapper feeds them to the Java
    tokenizer: one per line of a single input. A text's last token can depend on the next line (``etc.``
    before a capitalised line also yields a period), so this matches the official pipeline more closely than
    tokenizing texts one by one."""
    lines = [str(t or "").replace("\r", " ").replace("\n", " ") for t in texts]
    out: list[list[str]] = [[]]
    for tok in _lex("\n".join(lines)):
        if tok is _NEWLINE:
            out.append([])
            continue
        tok = tok.lower()
        if tok not in PUNCTUATION_TOKENS:
            out[-1].append(tok)
    if len(out) != len(lines):  # pragma: no cover - the lexer keeps every line break
        raise RuntimeError(f"tokenizer returned {len(out)} lines for {len(lines)} texts")
    return out


def ptb_tokenize(text: str) -> list[str]:
    """PTB-style tokens of `text`, lower-cased, with the COCO wrapper's punctuation tokens removed.

    ``"The IDs are <c1,CAM_BACK,1088.3,497.5>, (<c2,CAM_BACK,[1,2]>)."`` gives ``['the', 'ids', 'are', '<',
    'c1', 'cam_back', ',1088.3,497.5', '>', '-lrb-', '<', 'c2', 'cam_back', '-lsb-', '1,2', '-rsb-', '>',
    '-rrb-']``. Line breaks count as spaces.
    """
    return ptb_tokenize_batch([text])[0]


# ---------------------------------------------------------------------------------------------- n-grams
def _ngrams(tokens: Sequence[str], n: int) -> Counter:
    counts: Counter = Counter()
    for k in range(1, n + 1):
        for i in range(len(tokens) - k + 1):
            counts[tuple(tokens[i:i + k])] += 1
    return counts


def _check(hypotheses: Sequence[Sequence[str]], references: Sequence[Sequence[Sequence[str]]]) -> None:
    if len(hypotheses) != len(references):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} reference lists")
    for k, refs in enumerate(references):
        if not refs:
            raise ValueError(f"sample {k} has no reference")


# ---------------------------------------------------------------------------------------------- BLEU
def bleu(hypotheses: Sequence[Sequence[str]], references: Sequence[Sequence[Sequence[str]]], n: int = 4
         ) -> list[float]:
    """Corpus BLEU-1..n over tokenized hypotheses (one per sample) and references (one or more per sample).

    As ``pycocoevalcap``: clipped n-gram matches and guesses are summed over the corpus; each sample's
    reference length is the one closest to its hypothesis length (the shorter on a tie); precisions get
    +1e-15 / +1e-9 so zero matches give ~0 instead of an error; BLEU-k is the geometric mean of the first k
    precisions times the corpus brevity penalty.
    """
    _check(hypotheses, references)
    correct, guess = [0] * n, [0] * n
    test_len = ref_len = 0
    for hyp, refs in zip(hypotheses, references):
        max_counts: dict[tuple, int] = {}
        for ref in refs:
            for gram, c in _ngrams(ref, n).items():
                max_counts[gram] = max(max_counts.get(gram, 0), c)
        lengths = [len(r) for r in refs]
        ref_len += min((abs(length - len(hyp)), length) for length in lengths)[1]
        test_len += len(hyp)
        for gram, c in _ngrams(hyp, n).items():
            correct[len(gram) - 1] += min(max_counts.get(gram, 0), c)
        for k in range(n):
            guess[k] += max(0, len(hyp) - k)
    tiny, small = 1e-15, 1e-9
    scores, product = [], 1.0
    for k in range(n):
        product *= (correct[k] + tiny) / (guess[k] + small)
        scores.append(product ** (1.0 / (k + 1)))
    ratio = (test_len + tiny) / (ref_len + small)
    if ratio < 1:
        scores = [s * math.exp(1 - 1 / ratio) for s in scores]
    return scores


# ---------------------------------------------------------------------------------------------- ROUGE-L
def _lcs(a: Sequence[str], b: Sequence[str]) -> int:
    if len(a) < len(b):
        a, b = b, a
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b, 1):
            cur.append(prev[j - 1] + 1 if x == y else max(prev[j], cur[j - 1]))
        prev = cur
    return prev[-1]


def rouge_l(hypotheses: Sequence[Sequence[str]], references: Sequence[Sequence[Sequence[str]]],
            beta: float = 1.2) -> tuple[float, list[float]]:
    """(mean, per-sample) ROUGE-L F-measure: best precision and best recall over a sample's references.

    Like ``pycocoevalcap``, which splits the joined tokens on single spaces, an empty text counts as one
    empty token (so an empty hypothesis against an empty reference scores 1).
    """
    _check(hypotheses, references)
    scores = []
    for hyp, refs in zip(hypotheses, references):
        cand = list(hyp) or [""]
        precision = recall = 0.0
        for ref in refs:
            ref = list(ref) or [""]
            lcs = _lcs(ref, cand)
            precision = max(precision, lcs / len(cand))
            recall = max(recall, lcs / len(ref))
        if precision and recall:
            scores.append((1 + beta ** 2) * precision * recall / (recall + beta ** 2 * precision))
        else:
            scores.append(0.0)
    return (sum(scores) / len(scores) if scores else float("nan")), scores


# ---------------------------------------------------------------------------------------------- CIDEr
def cider(hypotheses: Sequence[Sequence[str]], references: Sequence[Sequence[Sequence[str]]], n: int = 4,
          sigma: float = 6.0) -> tuple[float, list[float]]:
    """(mean, per-sample) CIDEr as ``pycocoevalcap``'s ``Cider`` (the CIDEr-D style variant).

    TF-IDF n-gram vectors (document frequency counted over each sample's reference set, ``log(corpus
    size)`` as the IDF numerator), clipped cosine similarity per n, a Gaussian length penalty with `sigma`
    on the difference of the *bigram* counts (the reference code's quirk), averaged over n and references,
    times 10. A one-sample corpus scores 0, as there.
    """
    _check(hypotheses, references)
    ref_counts = [[_ngrams(r, n) for r in refs] for refs in references]
    doc_freq: Counter = Counter()
    for refs in ref_counts:
        doc_freq.update({gram for counts in refs for gram in counts})
    log_n = math.log(float(len(references))) if references else 0.0

    def vectorize(counts: Counter) -> tuple[list[dict], list[float], int]:
        vec: list[dict] = [{} for _ in range(n)]
        norm = [0.0] * n
        length = 0
        for gram, tf in counts.items():
            k = len(gram) - 1
            weight = tf * (log_n - math.log(max(1.0, doc_freq[gram])))
            vec[k][gram] = weight
            norm[k] += weight * weight
            if k == 1:
                length += tf
        return vec, [math.sqrt(v) for v in norm], length

    scores = []
    for hyp, refs in zip(hypotheses, ref_counts):
        vec_h, norm_h, len_h = vectorize(_ngrams(hyp, n))
        total = [0.0] * n
        for counts in refs:
            vec_r, norm_r, len_r = vectorize(counts)
            penalty = math.exp(-((len_h - len_r) ** 2) / (2 * sigma ** 2))
            for k in range(n):
                val = sum(min(w, vec_r[k].get(g, 0.0)) * vec_r[k].get(g, 0.0) for g, w in vec_h[k].items())
                if norm_h[k] != 0 and norm_r[k] != 0:
                    val /= norm_h[k] * norm_r[k]
                total[k] += val * penalty
        scores.append(sum(total) / n / len(refs) * 10.0)
    return (sum(scores) / len(scores) if scores else float("nan")), scores


# ---------------------------------------------------------------------------------------------- together
def coco_scores(predictions: Sequence[str], references: Sequence[str | Sequence[str]]) -> dict[str, float]:
    """``{"Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "ROUGE_L", "CIDEr"}`` (in this order) for raw texts.

    `references` holds one string or a list of strings per prediction. Texts are tokenized with
    :func:`ptb_tokenize` first, as ``language_evaluation.CocoEvaluator`` does with the Java tokenizer.
    """
    if not predictions:
        raise ValueError("no predictions to score")
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    ref_lists = [[ref] if isinstance(ref, str) else list(ref) for ref in references]
    hyp_text = [" ".join(t) for t in ptb_tokenize_batch(predictions)]
    flat = ptb_tokenize_batch([r for refs in ref_lists for r in refs])
    ref_text, k = [], 0
    for refs in ref_lists:
        ref_text.append([" ".join(t) for t in flat[k:k + len(refs)]])
        k += len(refs)
    # as pycocoevalcap: BLEU and CIDEr split on any whitespace (a no-break space inside a token too), ROUGE-L
    # on single spaces only
    b = bleu([h.split() for h in hyp_text], [[r.split() for r in refs] for refs in ref_text])
    r, _ = rouge_l([h.split(" ") for h in hyp_text], [[r.split(" ") for r in refs] for refs in ref_text])
    c, _ = cider([h.split() for h in hyp_text], [[r.split() for r in refs] for refs in ref_text])
    return dict(zip(COCO_KEYS, [*b, r, c]))
