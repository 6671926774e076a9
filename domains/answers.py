"""Answer parsing shared by every scorer: the built-in ones in ``adapt.metrics`` and the domain plugins' own.

It sits under ``domains`` so that plugins, which never import training code, and ``adapt`` read answers with one set
of rules: text normalisation (SQuAD's `normalize_answer`; the VQA evaluator's `vqa_tokens`), choices
(`parse_choice`: letters, ``B. forest``, option texts), boxes on InternVL's 0-1000 grid (`parse_boxes`, `box_iou`)
and a sample's fields (`reference_of`, `question_of`, `record_options`). ``adapt.metrics`` documents the rules each
task is scored by and holds the registry.
"""

from __future__ import annotations

import re
import string
import unicodedata
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from domains.boxes import ONE_BOX
from domains.boxes import Box as _PixelBox

Box = tuple[float, float, float, float]

# --------------------------------------------------------------------------------------------------
# text normalisation, exact match, token F1 (SQuAD conventions; VQA's below)

_ARTICLES = re.compile(r"\b(a|an|the)\b")


def _is_punct(ch: str) -> bool:
    return ch in string.punctuation or unicodedata.category(ch).startswith("P")


def _decimal_point(text: str, k: int) -> bool:
    return text[k] == "." and 0 < k < len(text) - 1 and text[k - 1].isdigit() and text[k + 1].isdigit()


def _minus_sign(text: str, k: int) -> bool:
    """A "-" starting a word and followed by a digit: "-5" is not "5" ("5-10", "COVID-19" keep no sign)."""
    return text[k] == "-" and (k == 0 or text[k - 1].isspace()) and k < len(text) - 1 and text[k + 1].isdigit()


# the Unicode minus sign reads as "-"; the invisible marks inside a word (soft hyphen, zero-width (non-)joiner, word
# joiner, BOM), common in text copied from PDF or HTML (PMC captions), are no word break: "hemor\u00adrhage" is one word
_READ_AS = str.maketrans({"\u2212": "-", **dict.fromkeys("\u00ad\u200c\u200d\u2060\ufeff")})


def number_text(value: int | float) -> str:
    """A JSON number as an answer's text: ``3`` and ``3.0`` are both "3" (JSON has one number type; a pandas column
    with a gap writes its whole numbers as 3.0, and "3.0" then missed the answer "3"), ``0.5`` is "0.5"."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e16:
        return str(int(value))
    return str(value)


def answer_text(value: Any, what: str, numbers: bool = False) -> str:
    """`value` as a prediction's or reference's text: None is no answer (""), anything but a string a ValueError
    naming it (an int or list from a malformed JSONL was a raw TypeError, and 0 or [] passed as no answer); with
    `numbers`, an int or float (not a bool) is its text (``{"answer": 3}`` is "3", `number_text`)."""
    if value is None:
        return ""
    if numbers and isinstance(value, (int, float)) and not isinstance(value, bool):
        return number_text(value)
    if not isinstance(value, str):
        kinds = "a string or a number" if numbers else "a string"
        raise ValueError(f"{what} must be {kinds} (or None for no answer), got {type(value).__name__} {value!r}")
    return value


def normalize_answer(text: str) -> str:
    """Lowercase, drop punctuation (ASCII and Unicode) and the articles a/an/the, squeeze spaces.

    SQuAD's normaliser, so "The Forest." and "forest" agree; None is the empty answer (as in `vqa_tokens`). Like
    SQuAD, punctuation is removed rather than replaced ("don't" is "dont"); unlike SQuAD, a decimal point between
    digits is kept, so "1.0" does not equal "10", and so is a minus sign starting a number ("-5" does not equal "5"),
    and a text of articles alone keeps them: the answer "A" (a letter) is "a", not nothing, which an empty answer
    would equal. A number is its text (3 is "3"); any other value (a list, a dict, a bool) is a ValueError naming it,
    not its printed form (``["B"]`` matched "b").
    """
    text = answer_text(text, "answer", numbers=True).lower().translate(_READ_AS)  # None is no answer, not "none"
    text = "".join(ch for k, ch in enumerate(text)
                   if not _is_punct(ch) or _decimal_point(text, k) or _minus_sign(text, k))
    return " ".join(_ARTICLES.sub(" ", text).split()) or " ".join(text.split())


def exact_match(prediction: str, reference: str) -> float:
    """1.0 when the normalised texts are equal, else 0.0."""
    return float(normalize_answer(prediction) == normalize_answer(reference))


def token_f1(prediction: str, reference: str) -> float:
    """SQuAD token F1 over normalised words (bag of words with counts).

    If either side has no words, 1.0 only when both are empty.
    """
    return bag_f1(normalize_answer(prediction).split(), normalize_answer(reference).split())


def bag_f1(pred: Sequence[str], ref: Sequence[str]) -> float:
    """F1 of two bags of words (counts kept); 1.0 when both are empty, 0.0 when one is."""
    if not pred or not ref:
        return float(len(pred) == len(ref))
    common = sum((Counter(pred) & Counter(ref)).values())
    return 2 * common / (len(pred) + len(ref))


# --------------------------------------------------------------------------------------------------
# VQA normalisation (task vqa; domains.medical's scorer reads answers through it too)

_NUMBER_WORDS = {w: str(k) for k, w in enumerate(
    ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve",
     "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen", "twenty"])}
_ARTICLE_WORDS = frozenset({"a", "an", "the"})
# words: a decimal number, or a run of letters / digits (punctuation and symbols separate words)
_WORD = re.compile(r"(?<!\S)-\d+(?:\.\d+)?|\d+\.\d+|[^\W_]+")  # a minus sign starting a number kept
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]")
_VQA_LEAD_IN = re.compile(r"^\s*(?:the\s+)?(?:correct\s+|final\s+)?answer\s*(?:is\b|:)\s*:?\s*", re.IGNORECASE)


def vqa_tokens(text: Any) -> list[str]:
    """The normalised words of an answer, as the VQA evaluator reads them (its processPunctuation and
    processDigitArticle): Unicode NFKC and case folding, punctuation dropped but a decimal point between digits kept
    ("3.5 cm" is two words) and so is a minus sign starting a number ("-5" is not "5"), a / an / the dropped (unless
    nothing else is left: "A" is ["a"], not the empty answer), number words up to twenty as digits ("two" is "2"); and a
    lead-in ("the answer is") dropped and CJK text split into single characters (no spaces between its words).
    None is the empty answer and a number its text; any other value that is no string is a ValueError naming it.
    """
    text = unicodedata.normalize("NFKC", answer_text(text, "answer", numbers=True)).casefold().translate(_READ_AS)
    text = _VQA_LEAD_IN.sub("", text)
    out: list[str] = []
    articles: list[str] = []
    for word in _WORD.findall(text):
        if _CJK.search(word):
            out.extend(word)  # one token per character (kana / hangul / hanzi runs)
        elif word not in _ARTICLE_WORDS:
            out.append(_NUMBER_WORDS.get(word, word))
        else:
            articles.append(word)
    return out or articles  # an answer of articles alone ("A", a letter) is not the empty answer


def normalize_vqa(text: Any) -> str:
    """`vqa_tokens` joined by single spaces."""
    return " ".join(vqa_tokens(text))


# --------------------------------------------------------------------------------------------------
# multiple choice

_LETTERS = string.ascii_uppercase
# a whole answer that is only a label: "B", "b", "B.", "(B)", "B)", "[B]", "'B'", "“B”"
_ONLY_LABEL = re.compile(r"^[(\[\"'“‘]?\s*([A-Za-z])\s*[)\]\"'”’]?\s*[.:]?$")
# an answer starting with a label and a delimiter: "B. forest", "(B) forest", "B) forest", "B: forest"; a lower-case
# letter only in parentheses or right before ".", ")" or ":" and a space ("b. forest"; "a forest", "e.g. x" are no
# labels); matched against one line (a capital alone on it is a label too)
_LEADING_LABEL = re.compile(
    r"^(?:\(([A-Za-z])\)|\[([A-Za-z])\]|([A-Z])(?:\s*[.:)]|[ \t]*$)|([a-z])[.:)](?=\s|$))\s*(.*)$")
# "The answer is B", "Answer: (C)", "option D", "correct choice is b."
# (a lowercase letter only when punctuation or the end follows: "the answer is a forest" names no option)
_KEYWORD_LABEL = re.compile(
    r"\b(?i:answer|option|choice)\b\s*(?i:is\b)?\s*[:\-]?\s*[(\[]?"
    r"(?:([A-Z])(?![A-Za-z])|([a-z])(?=\s*[)\].,;:!?]|\s*$))"
)
# a capital letter standing alone inside text: "(B)", "B or C", "... is B." — A and I (article and
# pronoun) only when label punctuation or the end follows, another label is joined to them ("A or B", "A/B",
# "A, B") or "A is" / "A was" follows: "A forest" and "I think" name no option
_LABEL_IN_TEXT = re.compile(
    r"\(([A-Z])\)"
    r"|(?<![A-Za-z0-9'’])([B-HJ-Z])(?![A-Za-z0-9'’])"
    r"|(?<![A-Za-z0-9'’])([AI])(?:[.:),;?!](?=\s|$)|\s*$)"
    r"|(?<![A-Za-z0-9'’])([AI])(?=\s*(?:/|,|&|\bor\b|\band\b|\bvs\b\.?)\s*[(\[]?[A-Z](?![A-Za-z0-9'’]))"
    r"|(?<![A-Za-z0-9'’])(A)(?=\s+(?:is|was)\b)"
)
# an explicit answer phrase ending right before a letter: "the answer is", "Answer:", "the correct option is",
# "Final answer:", "I choose" (an opening bracket or quote may sit between it and the letter)
_ANSWER_PHRASE = re.compile(
    r"(?:\banswer\s*(?:(?:is|would\s+be|should\s+be|must\s+be)\b\s*:?|:)"
    r"|\b(?:correct|right|best|final)\s+(?:option|choice)\s*(?:is\b\s*:?|:)"
    r"|\bfinal\s+answer\b"
    r"|\bI(?:\s+would|\s+will|['’](?:d|ll))?\s+(?:choose|pick|select|go\s+with)\b)"
    r"\s*(?:(?:option|choice)\s+)?(?:\$?\s*\\boxed\{|[(\[\"'“‘])?\s*$",  # also LaTeX's $\boxed{B}$
    re.I,
)
# lettered options listed in a question: "A. text", "(B) text", "C) text", "D: text", one per line
_OPTION_LINE = re.compile(r"^\s*\(?([A-Z])\s*[.):]\s+(\S.*?)\s*$", re.M)
# an option's own label written into its text: "B. forest" as the second option
_OPTION_PREFIX = re.compile(r"^\s*\(?([A-Z])\s*[.):]\s+(\S.*?)\s*$", re.S)
# lead-ins stripped before comparing an answer with option texts
_LEAD_IN = re.compile(
    r"^(?:(?:so|thus|therefore|i think|i believe)\s*,?\s*)?"
    r"(?:the\s+)?(?:correct\s+|right\s+|best\s+|final\s+)?(?:answer|option|choice|label|class)\s*(?:is|:)?\s*:?\s*",
    re.I,
)




def _valid_letters(options: Sequence[str] | None) -> str:
    return _LETTERS[: len(options)] if options else _LETTERS


def options_from_question(question: str) -> list[str] | None:
    """Option texts listed as lettered lines ("A. …\\nB. …") in a question, or None.

    Needs at least two lines lettered A, B, C… in order from A.
    """
    found = _OPTION_LINE.findall(question or "")
    options: list[str] = []
    for letter, text in found:
        if len(options) == len(_LETTERS):  # Z was the last label: a later lettered line starts something else
            break
        if letter == _LETTERS[len(options)]:
            options.append(text)
        elif options:
            break
    return options if len(options) >= 2 else None


def option_texts(options: Sequence[Any]) -> list[str]:
    """Option texts without a label of their own letter in front ("B. forest" as the second option is "forest")."""
    out = []
    for k, opt in enumerate(options):
        text = number_text(opt) if isinstance(opt, (int, float)) and not isinstance(opt, bool) else str(opt)
        m = _OPTION_PREFIX.match(text)
        out.append(m.group(2) if m and k < len(_LETTERS) and m.group(1) == _LETTERS[k] else text)
    return out


TextKey = Callable[[str], str]
"""How an answer and an option text are compared: both mapped by it, equal when their keys are."""


def _option_by_text(text: str, options: Sequence[str] | None, key: TextKey | None = None) -> str | None:
    """The letter of the one option whose text equals `text` exactly (after `key`), else None (also for an option
    past the 26th, Z: it has no letter)."""
    if not options:
        return None
    key = key or normalize_answer
    norm = key(text)
    if not norm:
        return None
    hits = [k for k, opt in enumerate(options) if key(opt) == norm]
    return _LETTERS[hits[0]] if len(hits) == 1 and hits[0] < len(_LETTERS) else None


def parse_choice(prediction: str, options: Sequence[str] | None, key: TextKey | None = None) -> str | None:
    """The option letter a prediction chooses, or None when it chooses none or several (or the prediction is None);
    ValueError for a prediction that is no string.

    Answer and option texts are compared by `key` (default `normalize_answer`; a domain may pass a wider one,
    e.g. class names with CamelCase split); letters are read the same whatever `key`. Accepted, in this order:

    1. only a label: ``B``, ``b``, ``B.``, ``(B)``, ``'B'`` (unless it is an option's text, as ``O`` among blood
       groups);
    2. an answer whose normalised text (also after a lead-in like "The answer is") equals exactly one
       option's text: ``Forest.`` → the letter of "forest". Containment never counts, so "forest"
       does not match "rainforest" and "tropical forest" does not match "forest";
    3. a leading label (also after a lead-in), ``B. forest``, ``(B) forest``, ``B) forest``, ``b. forest`` (a
       lower-case letter only before ``.``, ``)`` or ``:`` or in parentheses, so "a desert" is no label):
       when the rest is exactly an option's text, the letter counts if that option is its own (capitals
       inside it, as in ``C. Vitamin D``, are no second letter) and None if it is a *different* option
       (checked before 2, so ``A. rainforest`` is not read as the text "rainforest", the article dropped);
       otherwise other letters in the rest make it None (but see 5). Either way, another option's text weighed
       against the letter as in 5 makes it None (``B. forest or desert``, ``B. forest\\nOr maybe desert.``). For
       letters only the label's own line counts: the lines after it explain the choice, so
       ``B.\\nExplanation: A is wrong`` is B;
    4. letters named in text: ``The answer is B``, ``Answer: (C)``, ``I'd pick (B).`` — every
       distinct letter found counts, so ``B or C`` is ambiguous and gives None. Lowercase letters only
       count after "answer/option/choice" and before punctuation or the end; a sentence-initial
       article ("A forest") is not a label; one letter followed by another option's text that hedges, as in 5
       (``The answer is B or rainforest.``), gives None. A letter under a negation is no mention: it rules the
       option out, as a negated option text does, so ``Not B.`` and ``It is not C`` are None and ``B, not C`` and
       ``The answer is B, not C.`` are B (a letter right after an answer phrase counts: ``There is no doubt the
       answer is B`` is B);
    5. a reply that 3 or 4 finds naming several letters, concluding with an answer: when its *last* letter
       mention comes right after an answer phrase ("answer is", "answer:", "correct option is", "final answer",
       "I choose" / "I'd pick" / "I'll go with") and the text after it names no other option, that letter counts:
       ``A is a lake and C is a road. So the answer is B.``, ``...\\nFinal answer: B`` and ``A is a lake. The
       answer is B. The trees are dense.`` are B (a sentence explaining the choice does not cancel it). Another
       letter after it (``The answer is B. Or maybe (C).``, ``the answer is B or C``) or another option's text
       in its own clause (``the answer is B, maybe desert``) or in a later sentence or line that starts with it or
       hedges (``A is wrong, so the answer is B. Desert is dry.``, ``... B. It could also be desert.``) still gives
       None; a later sentence only mentioning it explains the choice (``... B.\\nBecause a desert has no trees.``),
       and so does text ruling other options out: named under a negation (``B. It is not desert or rainforest.``,
       ``the answer is B, not desert``) or in a sentence starting with one that holds a negation (``B. forest.
       Desert has no trees.``). A double negation rules nothing out but hedges: ``B. Rainforest is no less
       likely.``, ``... not unlikely``, ``... cannot be ruled out`` give None.

    Letters beyond the number of options are ignored; with `options` None any A–Z is a label. Options past the 26th
    (Z) have no letter: an answer naming one's text chooses none. The prediction is read
    after Unicode NFKC, so a full-width ``Ｂ`` or ``（Ｂ）`` is ``B``, and markdown bold (``**B**``) is dropped.
    """
    # full-width "Ｂ" (CJK output) is B; markdown bold ("**B**", "**Answer:** C") is no text of the answer
    text = unicodedata.normalize("NFKC", answer_text(prediction, "prediction")).replace("**", "").strip()
    if not text:
        return None
    valid = _valid_letters(options)

    m = _ONLY_LABEL.match(text)
    if m:
        letter = m.group(1).upper()
        by_text = _option_by_text(text, options, key)  # as `reference_choice` reads a one-letter reference
        return by_text or (letter if letter in valid else None)

    stripped = _LEAD_IN.sub("", text)
    labels = [label for candidate in dict.fromkeys((text, stripped)) if (label := _leading_label(candidate, valid))]
    for letter, rest, after in labels:
        # "C. Vitamin D": the rest is an option's own text, so capitals in it are no second letter
        named = _option_by_text(rest, options, key)
        if named is not None:
            if named != letter:  # "B. desert" where desert is option C: contradictory
                return None
            return None if _hedges_other_option(after, letter, options, key) else letter  # "B. forest\nOr desert."

    # an option's exact text wins over letters inside it (option "type A" is not the label A)
    by_text = _option_by_text(text, options, key) or _option_by_text(stripped, options, key)
    if by_text is not None:
        return by_text

    if labels:
        letter, rest, after = labels[0]
        if _letters_in_text(rest, valid) - {letter}:
            return _final_answer(text, valid, options, key)
        return None if _hedges_other_option(after, letter, options, key) else letter  # "B. forest or desert"

    mentions = _letter_mentions(text, valid)
    letters = {letter for _, letter in mentions}
    if len(letters) == 1:  # "The answer is B or rainforest": hedged as after several letters (see 5)
        pos, letter = mentions[0]
        return None if _hedges_other_option(text[pos + 1:], letter, options, key) else letter
    return _final_answer(text, valid, options, key) if letters else None


def _leading_label(text: str, valid: str) -> tuple[str, str, str] | None:
    """``(letter, rest of its line, all the text after it)`` of an answer that starts with a valid option label
    ("B. forest"), else None.

    Only the first line counts: the lines after it explain the choice ("B.\\nExplanation: A is wrong" is B), except
    later lines starting with a label, kept in the rest: an echoed option list ("A. desert\\nB. forest") names several.
    """
    first, *later = text.split("\n")
    m = _LEADING_LABEL.match(first.strip())
    if m is None:
        return None
    k = next(k for k in range(1, 5) if m.group(k))
    letter = m.group(k).upper()
    rest = "\n".join([m.group(5), *(line for line in later if _LEADING_LABEL.match(line.strip()))])
    # the text after the letter keeps its delimiter: "B. It has trees" is the letter and then a sentence
    return (letter, rest, "\n".join([m.string[m.end(k):], *later])) if letter in valid else None


def _letter_mentions(text: str, valid: str) -> list[tuple[int, str]]:
    """``(position, letter)`` of every valid option letter named in text, in order, but those under a negation
    ("not C", "neither A nor C"): they rule the option out, as a negated option text does. A letter right after an
    answer phrase is named whatever comes before it ("there is no doubt the answer is B")."""
    negated = [(m.start(), m.end()) for m in _NEGATED.finditer(text)]
    found = []
    for pattern in (_KEYWORD_LABEL, _LABEL_IN_TEXT):
        for m in pattern.finditer(text):
            k = next(k for k in range(1, len(m.groups()) + 1) if m.group(k))
            found.append((m.start(k), m.group(k).upper()))
    return sorted((pos, x) for pos, x in set(found) if x in valid and (
        not any(a < pos < b for a, b in negated) or _ANSWER_PHRASE.search(text[:pos])))


def _letters_in_text(text: str, valid: str) -> set[str]:
    return {letter for _, letter in _letter_mentions(text, valid)}


def _final_answer(text: str, valid: str, options: Sequence[str] | None = None, key: TextKey | None = None
                  ) -> str | None:
    """The letter a reply concludes with: a letter mention right after an answer phrase ("So the answer is B.",
    "Final answer: B") when nothing after it names another option, by letter or by text; else None."""
    mentions = _letter_mentions(text, valid)
    if not mentions:
        return None
    letter = mentions[-1][1]
    for pos, named in reversed(mentions):
        if named != letter:  # "The answer is B. Or maybe C.": another letter after the phrase
            return None
        if _ANSWER_PHRASE.search(text[:pos]):
            return None if _hedges_other_option(text[pos + 1:], letter, options, key) else letter
    return None


def _hedges_other_option(after: str, letter: str, options: Sequence[str] | None, key: TextKey | None) -> bool:
    """Whether the text after a concluding letter weighs another option's text against it: in the letter's own clause
    ("B or river", "B, maybe river"), or in a later sentence or line that starts with it ("Desert would be dry.") or
    hedges ("Or maybe river.", "It could also be river."). A later sentence merely mentioning it explains the choice
    ("B.\nBecause the river bends."), and so does one ruling it out: options named under a negation ("B, not river",
    "It is not desert or river.") or a sentence starting with one that holds a negation ("Desert has no trees.")."""
    clause, *sentences = _SENTENCE_BREAK.split(after)
    if _names_other_option(_unnegated(clause), letter, options, key):
        return True
    return any((_names_other_option(s, letter, options, key, leading=True) and not _NEGATION.search(s))
               or (_HEDGE.search(kept := _unnegated(s)) and _names_other_option(kept, letter, options, key))
               for s in sentences)


def _unnegated(text: str) -> str:
    """`text` without its negated stretches: from a negation to the next comma, semicolon, colon, "but" or the
    sentence's end ("not desert or river, maybe lake" keeps ", maybe lake")."""
    return _NEGATED.sub(" ", text)


# a negation word, and what turns it into a double negation that keeps an option open rather than ruling it out:
# "no less likely", "not unlikely", "cannot be ruled out", "isn't wrong", "would not rule out"
_NOT = r"(?:\b(?:not|no|never|neither|nor|cannot|rather\s+than|instead\s+of)\b|n['’]t\b)"
_NOT_RULING_OUT = (r"(?:\s+(?:be|been|being|to\s+be|so|that|too|at\s+all|entirely|completely|any)\b)*\s+"
                   r"(?:less\s+(?:likely|probable|plausible|possible|reasonable|correct|valid|suitable)"
                   r"|unlikely|improbable|impossible|implausible|unreasonable|incorrect|wrong"
                   r"|(?:ruled?|ruling)\s+out|exclud(?:e|ed|ing)|out\s+of\s+the\s+question)\b")
# where a sentence or line ends, and words that make one naming another option a hedge rather than an explanation
_SENTENCE_BREAK = re.compile(r"(?<=[.!?])\s+|\n")
_HEDGE = re.compile(r"\b(?:or|maybe|perhaps|possibly|probably|likely|could|might|would|also|either|alternatively)\b"
                    r"|" + _NOT + _NOT_RULING_OUT, re.I)
# a negation (not a double one), and the stretch it rules out (to the next comma, semicolon, colon, "but" or the
# sentence's end)
_NEGATION = re.compile(_NOT + r"(?!" + _NOT_RULING_OUT + r")", re.I)
_NEGATED = re.compile(r"(?:" + _NEGATION.pattern + r").*?(?=[,;:\n]|[.!?](?:\s|$)|\bbut\b|$)", re.I)


def _names_other_option(text: str, letter: str, options: Sequence[str] | None, key: TextKey | None,
                        leading: bool = False) -> bool:
    """Whether `text` names the text of an option other than `letter`'s, as whole words (after `key`; with `leading`,
    only as its first words); words inside a mention of the letter's own option text do not count ("tropical forest"
    names no "forest")."""
    if not options:
        return False
    key = key or normalize_answer
    words = key(text).split()

    def spans(option: str) -> list[tuple[int, int]]:
        phrase = key(option).split()
        n = len(phrase)
        return [(i, i + n) for i in range(1 if leading else len(words) - n + 1) if n and words[i:i + n] == phrase]

    own = spans(options[_LETTERS.index(letter)]) if _LETTERS.index(letter) < len(options) else []
    return any(not any(a <= i and j <= b for a, b in own)
               for k, option in enumerate(options[:len(_LETTERS)]) if _LETTERS[k] != letter
               for i, j in spans(option))


def reference_choice(reference: str, options: Sequence[str] | None, key: TextKey | None = None) -> str | None:
    """The option letter a reference names (a label such as ``B`` / ``(B)``, or an option's text), else None;
    ValueError for a reference that is no string (None is no answer)."""
    ref = unicodedata.normalize("NFKC", answer_text(reference, "reference")).strip()
    m = _ONLY_LABEL.match(ref)
    if m and m.group(1).upper() in _valid_letters(options):
        # a one-letter reference is a label, unless the options say it is an option's text
        by_text = _option_by_text(ref, options, key)
        return by_text or m.group(1).upper()
    return _option_by_text(ref, options, key)


def check_reference_words(record: Any, reference: str, words: Any) -> None:
    """ValueError naming the record when its reference has no words left to compare with (`words`: the reference
    as the scorer normalises it): every answer would score 0 but an empty one (a failed generation), which would
    score 1."""
    if not words:
        raise ValueError(f"{_where(record)}: reference {reference!r} has no words to compare an answer with "
                         "(empty after normalisation)")


def check_reference_is_option(record: Any, reference: str, options: Sequence[str] | None,
                              key: TextKey | None = None) -> None:
    """ValueError naming the record when it lists its own ``options`` and `reference` names none of them.

    Such a sample (a letter past the last option, a class missing from the list) can only be scored by luck: a
    model choosing an option never matches it. Options read from the question's text are not checked: a question
    may list lettered lines without being multiple choice."""
    if not _field(record, "options") or not options or reference_choice(reference, options, key) is not None:
        return
    last = _LETTERS[min(len(options), len(_LETTERS)) - 1]
    past_z = (f"; options past the {len(_LETTERS)}th (Z) have no letter, so a reference to one cannot be scored"
              if len(options) > len(_LETTERS) else "")
    raise ValueError(f"{_where(record)}: reference {reference!r} is neither an option letter (A-{last}) nor the text "
                     f"of one of the record's {len(options)} options {list(options)!r}{past_z}")


def mc_accuracy(prediction: str, reference: str, options: Sequence[str] | None) -> float:
    """1.0 when the prediction chooses the reference option, else 0.0.

    `reference` is a letter ("B", "(B)") or an option's text. When it is neither (a class name and
    no option list), the normalised prediction must equal the reference exactly.
    """
    ref_letter = reference_choice(reference, options)
    if ref_letter is None:
        return exact_match(prediction, reference)
    return float(parse_choice(prediction, options) == ref_letter)


# --------------------------------------------------------------------------------------------------
# grounding boxes

_BOX_TAG = re.compile(r"<box>(.*?)(?:</box>|$)", re.S)


def parse_boxes(text: str) -> list[Box]:
    """Every ``[x1, y1, x2, y2]`` inside ``<box>…</box>`` spans, in order (several per span allowed).

    Without any ``<box>`` tag the whole text is searched, as InternVL's evaluator does with its regex
    ``\\[*\\[(.*?),(.*?),(.*?),(.*?)\\]\\]*``; an unclosed final ``<box>`` (generation cut short) still
    counts. Lists without exactly four numbers are skipped, so malformed text gives ``[]`` (and None); a `text` that
    is no string is a ValueError.
    """
    text = answer_text(text, "box text")
    spans = _BOX_TAG.findall(text) if "<box>" in text else [text]
    return [tuple(float(v) for v in m.groups()) for span in spans for m in ONE_BOX.finditer(span)]


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two ``(x1, y1, x2, y2)`` boxes; 0.0 for empty or inverted boxes."""
    ax1, ay1, ax2, ay2 = (float(v) for v in a)
    bx1, by1, bx2, by2 = (float(v) for v in b)
    return _PixelBox(ax1, ay1, ax2, ay2).iou(_PixelBox(bx1, by1, bx2, by2))


def grounding_hit(prediction: str, reference: str, threshold: float = 0.5) -> float:
    """1.0 when the first predicted box overlaps the first reference box with IoU > `threshold`.

    Both are on InternVL's 0–1000 grid. As in InternVL's RefCOCO evaluator, a predicted box whose
    four values sum to less than 4 is read as normalised to 0–1 and scaled by 1000, unless one is negative: that is
    no 0–1 box (nor a grid one) and is scored as written, not scaled up into a hit. No predicted box
    scores 0.0; a reference without a box, or whose first box is not an ordered box of positive area on the
    grid or has no value above 1 (a 0-1 box: the same box predicted is scaled by 1000), is an error in the data and
    raises ValueError (no answer could hit it); so is a `threshold` outside (0, 1]
    (50 meant as 50% would score every prediction 0).
    """
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 < threshold <= 1:
        raise ValueError(f"grounding IoU threshold must be a number in (0, 1], got {threshold!r}")
    refs = parse_boxes(reference)
    if not refs:
        raise ValueError(f"grounding reference has no [[x1, y1, x2, y2]] box: {reference!r}")
    x1, y1, x2, y2 = refs[0]
    if not (0 <= x1 < x2 <= 1000 and 0 <= y1 < y2 <= 1000):
        raise ValueError(f"grounding reference box {list(refs[0])} in {reference!r} must have 0 <= x1 < x2 <= 1000 "
                         "and 0 <= y1 < y2 <= 1000 (InternVL's 0-1000 grid)")
    if max(refs[0]) <= 1:  # no answer could hit it: the same box predicted sums to < 4, so it is scaled by 1000
        raise ValueError(f"grounding reference box {list(refs[0])} in {reference!r} has no value above 1, so it reads "
                         "as normalised to 0-1: write it on InternVL's 0-1000 grid (x1000)")
    preds = parse_boxes(prediction)
    if not preds:
        return 0.0
    pred = preds[0]
    if sum(pred) < 4 and min(pred) >= 0:
        pred = tuple(v * 1000 for v in pred)
    return float(box_iou(pred, refs[0]) > threshold)


# --------------------------------------------------------------------------------------------------
# the sample's fields (an adapt Record or a plain mapping)


def _field(record: Any, name: str) -> Any:
    """A record's field, from an adapt `Record` or a plain mapping (as domain scorers are handed either)."""
    return record.get(name) if isinstance(record, Mapping) else getattr(record, name, None)


def _turn_value(turn: Any, role: str) -> str | None:
    if isinstance(turn, dict):
        if turn.get("from") == role or turn.get("role") == {"gpt": "assistant", "human": "user"}[role]:
            return turn.get("value", turn.get("content"))
    return None


def reference_of(record: Any) -> str:
    """The record's reference answer: `record.answer` (a number as its text, as the record reader keeps it), else
    the value of its last gpt turn; ValueError naming the record for an answer of another type."""
    answer = _field(record, "answer")
    if isinstance(answer, (int, float)) and not isinstance(answer, bool):
        return number_text(answer)  # {"answer": 3} from a mapping, as the reader's Record holds "3"
    if answer is not None:
        if not isinstance(answer, str):
            raise ValueError(f"{_where(record)}: answer must be a string, got {type(answer).__name__} {answer!r}")
        return answer
    for turn in reversed(_field(record, "conversations") or []):
        value = _turn_value(turn, "gpt")
        if value is not None:
            return value
    raise ValueError(f"{_where(record)}: no answer and no gpt turn to evaluate against")


def question_of(record: Any) -> str:
    """The text of the last human turn before the last gpt turn (or the last human turn)."""
    turns = list(_field(record, "conversations") or [])
    last_gpt = max((k for k, t in enumerate(turns) if _turn_value(t, "gpt") is not None), default=len(turns))
    for turn in reversed(turns[:last_gpt]):
        value = _turn_value(turn, "human")
        if value is not None:
            return value
    return ""


def record_options(record: Any) -> list[str] | None:
    """`record.options` (`option_texts`), else the lettered options listed in its question, else None.

    `record` is an adapt `Record` or a mapping with ``options`` / ``conversations``; ValueError naming the record
    for ``options`` that are no list (a string's characters would be read as options)."""
    options = _field(record, "options")
    if options is not None and not isinstance(options, (list, tuple)):
        raise ValueError(f"{_where(record)}: options must be a list of option texts, got {type(options).__name__} "
                         f"{options!r}")
    if options:
        return option_texts(options)
    return options_from_question(question_of(record))


def _where(record: Any) -> str:
    source, line = _field(record, "source"), _field(record, "line")
    return f"{'?' if source is None else source}:{'?' if line is None else line}"
