"""Caption metrics as the COCO caption toolkit computes them: BLEU-1..4, ROUGE-L and CIDEr, after a pure-Python
port of the Stanford PTBTokenizer's rules.

DriveLM's language score (``domains.md`` §1.1) runs ``language_evaluation.CocoEvaluator``: every answer and
reference goes through the Java ``PTBTokenizer`` (CoreNLP 3.4.1, ``-preserveLines -lowerCase``), the COCO
wrapper drops punctuation tokens, and the pure-Python ``pycocoevalcap`` scorers compare the rest. This module
re-implements that pipeline without Java:

* :func:`ptb_tokenize` / :func:`ptb_tokenize_batch` follow the CoreNLP 3.4.1 tokenizer: words, hyphenated and
  ``_`` joined words (``cam_front``), numbers (``1088.3``, ``1,234``, and ``,1088.3,497.5`` where a comma runs
  straight into digits), ``n't`` / ``'s`` / ``'re`` split off, ``cannot`` -> ``can not``, single letters and
  common abbreviations kept with their period (``a.``, ``mr.``, ``e.g.``) unless a sentence plainly ends there
  (``etc. The`` -> ``etc.`` ``.``), brackets as ``-lrb-`` / ``-rrb-`` (``(``, ``)``), ``-lsb-`` / ``-rsb-``
  (``[``, ``]``) and ``-lcb-`` / ``-rcb-`` — the COCO wrapper's filter lists only the upper-case forms, so, as
  in the official pipeline, these survive lower-casing — and ``<`` / ``>`` as tokens of their own, so a DriveLM
  c-tag ``<c1,CAM_BACK,1088.3,497.5>`` becomes ``< c1 , cam_back ,1088.3,497.5 >`` (the lone comma then
  dropped). Then tokens are lower-cased and the wrapper's punctuation tokens (quotes, ``. ? ! , : ; - --
  ...``) removed.

  Two rule sets (`protocol`, :data:`PROTOCOLS`). **official** (the default) also follows the Java rules where
  they surprise: words joined by ``.`` ``!`` or ``?`` without a space stay one token (``stopped.The`` ->
  ``stopped.the``, ``left!Then``, ``U.S.The``), but an abbreviation that may end a sentence splits off when at
  most one letter follows (``Inc.A`` -> ``inc.`` ``a``); ``gonna gotta wanna lemme gimme`` -> ``gon na`` ...;
  ``'tis`` / ``'twas`` -> ``'t is``; ``'n'``, ``'em``, ``'til``, ``'cause``, ``'90s``, ``o'clock``,
  ``d'Avignon``, ``l'``, ``y'`` (``y'all`` -> ``y'`` ``all``) and other apostrophe words kept; after a
  curly apostrophe ``’s`` / ``’d`` / ``’n`` split off even before a letter (``’dog`` -> ``'d`` ``og``); one
  or two curly quotes as one token of LaTeX quotes (a pair such as ``“”`` is then not in the filter's list
  and stays); ``AT&T``; smileys (``:)`` -> ``:-rrb-``); e-mail addresses and URLs; fractions (``1 3/4`` one
  token with a no-break space), ``£ € ¢ ½`` rewritten (``#``, ``$``, ``cents``, ``1/2``); runs of ``* @ # _``;
  a character outside the BMP (an emoji) ends a token and is dropped, as Java's lexer, reading UTF-16, does.
  It agreed token for token with the Java tokenizer on every text of ``tests/data/coco_caption_golden.json``
  (the protocol cases and 600 generated driving answers and fragment soups); known differences remain on
  constructs no driving answer has (digits run into a web address, ``5www.x.com``).

  **pocket** is this project's earlier rule set: it splits glued sentences (``stopped`` ``the``), keeps
  ``gonna`` whole and drops the apostrophes of ``'n'``, ``o'clock`` and the like, as a tokenizer that reads
  text the way a person would; it scores a model that forgets spaces after full stops higher than the
  official pipeline does.
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
from typing import Any

__all__ = ["COCO_KEYS", "PROTOCOLS", "PUNCTUATION_TOKENS", "bleu", "check_protocol", "cider", "coco_scores",
           "ptb_tokenize", "ptb_tokenize_batch", "rouge_l"]

COCO_KEYS = ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "ROUGE_L", "CIDEr")

# tokens the COCO wrapper removes after tokenizing (pycocoevalcap ptbtokenizer.PUNCTUATIONS); it also lists
# -LRB- -RRB- -LCB- -RCB-, which never match because the tokenizer has lower-cased them already
PUNCTUATION_TOKENS = frozenset(["''", "'", "``", "`", ".", "?", "!", ",", ":", "-", "--", "...", ";"])

# ---------------------------------------------------------------------------------------------- tokenizer
PROTOCOLS = ("official", "pocket")
"""Tokenizer rule sets. ``official`` follows the Java PTBTokenizer of the COCO caption code (CoreNLP 3.4.1) on
the constructs listed in the module notes; ``pocket`` is this project's earlier reading, which splits text that
runs across a sentence end without a space (``stopped.The`` -> ``stopped`` ``the``) and leaves the tokenizer's
special words whole (``gonna``, ``'n'`` -> ``n``)."""

_APOS = "'\u2019\u0092"
# apostrophe-like marks the tokenizer also accepts inside a word (APOSETCETERA)
_APOS_ETC = _APOS + "`\u0091\u2018\u201b"
_QUOTE_CHARS = "\"'`\u2018\u2019\u201a\u201b\u201c\u201d\u201e\u201f\u2039\u203a\u00ab\u00bb\u0091\u0092\u0093\u0094"
# a letter or a decimal digit, as Java's [:letter:] and [:digit:] (Python's \w also takes superscripts,
# vulgar fractions and other numeric symbols, which the tokenizer treats as symbols)
_NOT_JAVA_ALNUM = "\u00b2\u00b3\u00b9\u00bc-\u00be\u2070-\u209f\u2150-\u218f\u2460-\u24ff"
_LETTER = rf"[^\W\d_{_NOT_JAVA_ALNUM}]"
_ALNUM = rf"[^\W_{_NOT_JAVA_ALNUM}]"
# one or two of these make a quote token; the official tokenizer rewrites each as a LaTeX quote or keeps it
_QUOTES = {"`": "`", "\u2018": "`", "\u201b": "`", "\u2039": "`", "\u0091": "`", "\u2019": "'", "\u203a": "'",
           "\u0092": "'", "\u201c": "``", "\u00ab": "``", "\u0093": "``", "\u201d": "''", "\u00bb": "''",
           "\u0094": "''", "\u201a": "\u201a", "\u201e": "\u201e", "\u201f": "\u201f"}
_QUOTES_ONE = "".join(_QUOTES)
# a word, and the tokenizer's WORD: words joined by . ! or ? with no space ("stopped.The", "left!Then")
_WORD = rf"{_LETTER}{_ALNUM}*"
_DOTTED_WORD = rf"{_WORD}(?:[.!?]{_WORD})*"
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
_ABBREV1 = rf"(?:(?i:{_SENT_ABBREVS}|ed\.d|ph\.d)|Ark|Ill|Mass|Miss|Ore|Wash)\."
# the lexer's SPACE class (CoreNLP PTBLexer.flex: [ \t\u00A0\u2000-\u200A\u3000]): the en/em/thin/hair spaces and
# the ideographic space count as spaces in its look-aheads too, as str.split and the other scorers read them
_SP = " \t\u00a0\u2000-\u200a\u3000"
# what follows the end of a sentence: a space, then another space / line break, a capital or a tag
_SENT_END = re.compile(rf"[{_SP}\n](?:[{_SP}\n]|[A-Z]|<[A-Za-z/!?])")
# words that start a new sentence after an acronym or a single letter ("is B. The car" -> "b" "." "the")
_ACRO_END = re.compile(
    rf"[{_SP}\n]+(?:A(?i:bout|ccording|dditionally|fter|n|s|t)?|B(?i:ut)|E(?i:arlier)|H(?i:e|er|ere|owever)"
    r"|I(?i:f|n|t)|L(?i:ast)|M(?i:any|ore|r\.|s\.)|N(?i:ow)|O(?i:nce|ne|ther|ur)|S(?i:he|ince|o|ome|uch)"
    r"|T(?i:hat|he|hen|here|hese|hey|his)|W(?i:e|hen|hile|hat)|Y(?i:et|ou))(?:\s|$)")

# (name, pattern); a pattern's group "tok" (if any) is the emitted text, the rest is trailing context that
# still counts for the longest match, as JFlex counts it
_POCKET_RULES: list[tuple[str, str]] = [
    ("cannot", r"(?P<tok>[cC][aA][nN])[nN][oO][tT]"),
    ("sgml", r"</?[A-Za-z!?][\w:.\-]*(?:\s+[A-Za-z_:][\w:.\-]*(?:\s*=\s*(?:\"[^\"\n]*\"|'[^'\n]*'))?)*\s*/?>"),
    ("word_redaux", rf"(?P<tok>[^\W\d_]+)[{_APOS}](?:[msdMSD]|[rR][eE]|[vV][eE]|[lL][lL])(?![^\W\d_])"),
    ("word_nt", rf"(?P<tok>[A-Za-z]*[A-MO-Za-mo-z])[nN][{_APOS}\u2018][tT]"),
    ("redaux", rf"[{_APOS}](?:[msdMSD]|[rR][eE]|[vV][eE]|[lL][lL])(?![^\W\d_])"),
    ("nt", rf"[nN][{_APOS}\u2018][tT]"),
    ("number_abbrev", rf"(?P<tok>[nN][oO][sS]?\.)(?=[{_SP}]*\d)"),  # "No. 5" (but "No." alone is a word)
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
]

# the official rules: the pocket ones with these replaced (same name, before = None) or added before the rule
# named `before`. Several patterns under one name are separate rules, as JFlex alternatives are: the longest
# match wins, not the first alternative that matches.
_OFFICIAL_CHANGES: list[tuple[str, list[str], str | None]] = [
    # gonna gotta lemme gimme wanna -> "gon" "na" ...; 'tis 'twas -> "'t" "is"; a longer word wins ("gonnas")
    ("assimilation", [r"(?P<tok>(?i:gon(?=na)|wan(?=na)|got(?=ta)|lem(?=me)|gim(?=me)))(?i:na|ta|me)",
                      r"(?P<tok>'(?i:t))(?i:is|was)"], "sgml"),
    # a word before 's 're ... whatever follows; alone, 's 're ... before a letter only after a curly apostrophe
    ("word_redaux", [rf"(?P<tok>{_DOTTED_WORD})[{_APOS}](?:[msdMSD]|[rR][eE]|[vV][eE]|[lL][lL])"], None),
    ("redaux", [r"'(?:[msdMSD]|[rR][eE]|[vV][eE]|[lL][lL])(?![^\W\d_])",
                r"[\u2019\u0092](?:[msdMSD]|[rR][eE]|[vV][eE]|[lL][lL])"], None),
    ("word", [_DOTTED_WORD], "redaux"),
    # words with an apostrophe the tokenizer keeps whole: 'n' 'em 'til 'cause '90s o'clock l' y'all ...
    ("apoword", [rf"[{_APOS}][nN][{_APOS}]", r"'[nN](?!\S)", r"[\u2019\u0092][nN]", rf"[lLdDjJ][{_APOS}]",
                 rf"(?i:dunkin|somethin|ol)[{_APOS}]",
                 rf"[{_APOS}](?i:em|till?|cause)", rf"[A-HJ-XZn][{_APOS_ETC}]{_LETTER}{{2,}}",
                 rf"[{_APOS}][2-9]0(?i:s)", rf"{_LETTER}+[aeiouyAEIOUY][{_APOS_ETC}][aeiouA-Z]{_LETTER}*",
                 r"(?i:cont'd\.?|nor'easter|c'mon|e'er|s'mores|ev'ry|li'l|nat'l)", rf"[oO][{_APOS_ETC}][oO]"],
     "redaux"),
    # smileys count only before a character that is not a letter or digit (";D " but not ";Dr")
    ("smiley", [r"[<>]?[:;=][-o*']?[()DPdpO\\{@|\[\]](?=[^A-Za-z0-9])"], "redaux"),
    ("email", [r'<?[a-zA-Z0-9][^ \t\n\f\r"<>|()\u00a0{}]*@(?:[^ \t\n\f\r"<>|(){}.\u00a0]+\.)*'
               r'[^ \t\n\f\r"<>|(){}.\u00a0]+>?'], "redaux"),
    # (the tokenizer's second URL form excludes the character range , to _: digits, capitals, / : ; @ ...)
    ("url", [r'(?i:ftp|svn|svn\+ssh|https?|mailto)://[^ \t\n\f\r"<>|()]*[^ \t\n\f\r"<>|.!?(){},-]',
             r'(?:www\.(?:[^ \t\n\f\r"<>|.!?(){},]+\.)+[a-zA-Z]{2,4}'
             r"|(?:[^ \t\n\f\r\"`'<>|.!?(){}\x2c-\x5f$]+\.)+(?i:com|net|org|edu))"
             r'(?:/[^ \t\n\f\r"<>|()]+[^ \t\n\f\r"<>|.!?(){},-])?'], "redaux"),
    ("apoword2", [rf"(?P<tok>[yY][{_APOS}])(?={_LETTER})"], "redaux"),
    ("tbspec", [r"-(?i:rrb|lrb|rcb|lcb|rsb|lsb)-",
                rf"(?i:c\.d\.s|pro-|anti-|s&p-500|s&ls|cap[{_APOS}]n|c[{_APOS}]est)", rf"[{_APOS}]\d\d(?!\S)"],
     "redaux"),
    ("twitter", [r"@[a-zA-Z_][a-zA-Z_0-9]*", "#" + _WORD], "redaux"),
    ("number_abbrev", [rf"(?P<tok>(?i:ca|figs?|prop|nos?|art|bldg|pp|op)\.)(?=[{_SP}\n]?\d)"], None),
    # a dotted word keeps its period before , ; : ("S.Mr.:" -> "s.mr."); hyphen parts may be acronyms ("-p.m.")
    ("thing_dot", [rf"(?P<tok>{_DOTTED_WORD}\.)[,;:]"], "hthing"),
    ("hthing", [r"[A-Za-z0-9][A-Za-z0-9.,]*(?:-(?:[A-Za-z](?:\.[A-Za-z])+\.|[A-Za-z0-9]+))+"], None),
    # runs of * @ # _ are one token
    ("marks_run", [r"\*+|(?:\\\*){1,3}|@+|#+|_+"], "number"),
    # an abbreviation that may end a sentence counts two more characters of context than a dotted word
    # ("Inc.A" -> "inc." "a", but "Inc.Ab" -> "inc.ab"), except at the very end of the input
    ("sent_abbrev", [rf"(?P<tok>{_ABBREV1})(?s:..)", _ABBREV1], None),
    # THING: d'Avignon, O'Neil, l'amour-style prefixes inside hyphenated and _ joined words
    ("thing", [rf"(?:[dDoOlL][{_APOS_ETC}]{_ALNUM})?{_ALNUM}+"
               rf"(?:[-_\u058a\u2010\u2011](?:[dDoOlL][{_APOS_ETC}]{_ALNUM})?{_ALNUM}+)*"], None),
    ("thinga", [r"[A-Z]+(?:[+&][A-Z]+)+"], "thing"),
    ("fraction", [r"(?:\d{1,4}[- \u00a0])?\d{1,4}(?:\\?/|\u2044)\d{1,4}"], "number"),
    ("dollar", [r"[A-Z]+\$"], "number"),
    ("entity", [r"&amp;"], "number"),
    # quotes: ASCII '' and " and ', or one or two curly / angle quotes, rewritten as LaTeX quotes (see _QUOTES)
    ("quote", ["''", '"', rf"[{_APOS}]", rf"[{_QUOTES_ONE}]{{1,2}}"], None),
]


def _rule_set(changes: list[tuple[str, list[str], str | None]]) -> list[tuple[str, re.Pattern]]:
    rules = list(_POCKET_RULES)
    for name, patterns, before in changes:
        names = [n for n, _ in rules]
        at = names.index(before if before is not None else name)
        rules[at:at + (before is None)] = [(name, pattern) for pattern in patterns]
    return [(name, re.compile(pattern)) for name, pattern in rules]


_RULES = {"pocket": _rule_set([]), "official": _rule_set(_OFFICIAL_CHANGES)}
_BRACKETS = {"(": "-LRB-", ")": "-RRB-", "[": "-LSB-", "]": "-RSB-", "{": "-LCB-", "}": "-RCB-"}
# characters the official tokenizer rewrites: currency signs and vulgar fractions
_NORMALISED = {"\u00a2": "cents", "\u00a3": "#", "\u20ac": "$", "\u00bc": "1/4", "\u00bd": "1/2", "\u00be": "3/4"}
_SPACE = re.compile(r"[^\S\n]+|[\u200b\ufeff]+")
_ASTRAL = re.compile("[\U00010000-\U0010ffff]")  # outside the BMP: two UTF-16 code units in Java
_SURROGATE = re.compile("[\ud800-\udfff]")


def _as_utf16(text: str) -> str:
    """`text` with each character outside the BMP (emoji, 𝐀) as its two UTF-16 surrogates, as the Java lexer
    reads it: a surrogate is in none of its word classes, so it ends a token and, matched by no rule, is
    dropped ("Untokenizable"); a negated class (in a URL) may still take it into a token."""
    def pair(m: re.Match) -> str:
        cp = ord(m.group()) - 0x10000
        return chr(0xD800 + (cp >> 10)) + chr(0xDC00 + (cp & 0x3FF))

    return _ASTRAL.sub(pair, text)


def _from_utf16(token: str) -> str:
    """`token` with its surrogate pairs joined back into characters."""
    return token.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "surrogatepass")
_NEWLINE = None  # marker between lines in the token stream
# the Java lexer's NEWLINE characters: each a line break of the wrapper's one-caption-per-line input (the official
# pipeline would misalign every later caption), so each is a space, as the wrapper makes "\n"; as a bare space
# character instead, "B.\u2028The" kept "b." and "no.\u20285" lost its period, where "\n" gives "b" and "no."
_LINE_BREAKS = str.maketrans(dict.fromkeys("\r\n\u2028\u2029\x0b\x0c\x85", " "))


def check_protocol(protocol: str) -> str:
    """`protocol` if it names a tokenizer rule set (:data:`PROTOCOLS`), else ValueError."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"protocol must be one of {', '.join(PROTOCOLS)}, got {protocol!r}")
    return protocol


def _lex(text: str, protocol: str = "official") -> list[str | None]:
    """PTB tokens of `text` (original case), with :data:`_NEWLINE` where the text has a line break."""
    rules = _RULES[check_protocol(protocol)]
    official = protocol == "official"
    if official:
        text = _as_utf16(text)
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
        for name, rule in rules:
            m = rule.match(text, pos)
            if m and m.end() - pos > best_len:  # longest match; the earlier rule wins a tie
                best, best_len, best_name = m, m.end() - pos, name
        if best is None:  # any other character is a token of its own (%, $, +, =, <, >, /, *, ...)
            tok = text[pos]
            if official and _SURROGATE.match(tok):  # Java drops it, "Untokenizable"
                pos += 1
                continue
            tokens.append(_NORMALISED.get(tok, tok) if official else tok)
            pos += 1
            continue
        tok = best.groupdict().get("tok") or best.group(0)
        pos += len(tok)
        if best_name == "sgml":  # spaces inside one token become no-break spaces
            tok = tok.replace(" ", "\u00a0")
        elif best_name == "phone":
            tok = tok.replace(" ", "\u00a0").replace("(", "-LRB-").replace(")", "-RRB-")
        elif best_name == "fraction":
            tok = tok.replace(" ", "\u00a0")
        elif best_name == "entity":
            tok = "&"
        elif best_name == "bracket":
            tok = _BRACKETS[tok]
        elif best_name == "ellipsis":
            tok = "..."
        elif best_name == "dashes":
            tok = "--" if not tok.startswith("-") or 3 <= len(tok) <= 4 else tok
        elif best_name == "quote" and official:
            tok = "''" if tok == '"' else tok if tok[0] in "'\"" else "".join(_QUOTES[ch] for ch in tok)
        elif best_name == "quote":
            tok = "'"  # every quote form ends up in the filtered set (`` '' ` ')
        elif best_name == "smiley":
            tok = tok.replace("(", "-LRB-").replace(")", "-RRB-")
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
    if official:
        tokens = [_from_utf16(t) if t and _SURROGATE.search(t) else t for t in tokens]
    return tokens


def ptb_tokenize_batch(texts: Sequence[str], protocol: str = "official") -> list[list[str]]:
    """:func:`ptb_tokenize` for several texts at once, exactly as the COCO wrapper feeds them to the Java
    tokenizer: one per line of a single input. A text's last token can depend on the next line (``etc.``
    before a capitalised line also yields a period), so this matches the official pipeline more closely than
    tokenizing texts one by one. `protocol` picks the rule set (:data:`PROTOCOLS`)."""
    lines = [str(t or "").translate(_LINE_BREAKS) for t in texts]
    if not lines:  # "".join of no lines is one empty line
        return []
    out: list[list[str]] = [[]]
    for tok in _lex("\n".join(lines), protocol):
        if tok is _NEWLINE:
            out.append([])
            continue
        tok = tok.lower()
        if tok not in PUNCTUATION_TOKENS:
            out[-1].append(tok)
    if len(out) != len(lines):  # pragma: no cover - the lexer keeps every line break
        raise RuntimeError(f"tokenizer returned {len(out)} lines for {len(lines)} texts")
    return out


def ptb_tokenize(text: str, protocol: str = "official") -> list[str]:
    """PTB-style tokens of `text`, lower-cased, with the COCO wrapper's punctuation tokens removed.

    ``"The IDs are <c1,CAM_BACK,1088.3,497.5>, (<c2,CAM_BACK,[1,2]>)."`` gives ``['the', 'ids', 'are', '<',
    'c1', 'cam_back', ',1088.3,497.5', '>', '-lrb-', '<', 'c2', 'cam_back', '-lsb-', '1,2', '-rsb-', '>',
    '-rrb-']``. Line breaks count as spaces: ``\\r``, ``\\n`` and the others the Java tokenizer reads as one
    (``\\u2028``, ``\\u2029``, ``\\x0b``, ``\\x0c``, ``\\x85``). The no-break, en/em/thin/hair
    (``\\u2000``-``\\u200a``) and ideographic spaces are spaces everywhere, also where a rule looks at what follows
    (``"B.\\u2009The"`` as ``"B. The"``), as the Java lexer's SPACE class reads them. ``"The car stopped.The
    light"`` gives ``[..., 'stopped.the', 'light']`` with the official rules and ``[..., 'stopped', 'the',
    'light']`` with the pocket ones.
    """
    return ptb_tokenize_batch([text], protocol)[0]


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
def _reference_list(k: int, ref: Any) -> list[str]:
    """Sample `k`'s references as a list, or a ValueError naming the sample when one is missing or blank (nothing
    to score against: a caller leaves such samples out, as DriveLM's q_only file has no answers)."""
    refs = [ref] if isinstance(ref, str) else list(ref) if isinstance(ref, Sequence) else None
    if refs is None or not all(isinstance(r, str) and r.strip() for r in refs):
        raise ValueError(f"sample {k}: reference {ref!r} is not a non-empty text or list of non-empty texts")
    return refs


def coco_scores(predictions: Sequence[str], references: Sequence[str | Sequence[str]],
                protocol: str = "official") -> dict[str, float]:
    """``{"Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "ROUGE_L", "CIDEr"}`` (in this order) for raw texts.

    `references` holds one string or a list of strings per prediction. Texts are tokenized with
    :func:`ptb_tokenize` first (with `protocol`'s rules), as ``language_evaluation.CocoEvaluator`` does with
    the Java tokenizer. A missing (None) or blank reference is a ValueError naming its sample.
    """
    check_protocol(protocol)
    if not predictions:
        raise ValueError("no predictions to score")
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    ref_lists = [_reference_list(k, ref) for k, ref in enumerate(references)]
    hyp_text = [" ".join(t) for t in ptb_tokenize_batch(predictions, protocol)]
    flat = ptb_tokenize_batch([r for refs in ref_lists for r in refs], protocol)
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
