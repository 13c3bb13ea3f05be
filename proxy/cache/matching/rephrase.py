"""Hand-written rephrasings (lay vs expert, informal vs formal) for the verifier's data.

Single-prompt edits (`perturb.py`) hardly ever move a question below cosine 0.95, so a verifier
trained on them alone never learns what a real rephrasing *below* 0.95 looks like: a patient's
"how do I know if I have high blood pressure" and a doctor's "what are the clinical
manifestations of hypertension". These templates, written for this project, give each question
(an intent about one subject) several phrasings:

* positives: two phrasings of one intent about one subject (sometimes the subject's lay name on
  one side and its technical name on the other);
* negatives: the same intent about a sibling subject ("... of gout" vs "... of asthma"), and
  another intent about the same subject ("symptoms of gout" vs "treatment of gout") — the
  different-question-same-topic near misses a cache sees most.

Intents are split by number (`intent_split`), and the finance domain is never trained on at all
(`HELD_OUT_DOMAINS`): its rows are the test split's "a set we never trained on".
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from itertools import combinations

from proxy.cache.matching.perturb import Example

# subject pools: (lay name, technical name); equal when there is no lay name
CONDITIONS: tuple[tuple[str, str], ...] = (
    ("high blood pressure", "hypertension"), ("a heart attack", "myocardial infarction"),
    ("acid reflux", "gastroesophageal reflux disease"), ("pink eye", "conjunctivitis"),
    ("shingles", "herpes zoster"), ("chickenpox", "varicella"), ("hay fever", "allergic rhinitis"),
    ("an underactive thyroid", "hypothyroidism"), ("kidney stones", "nephrolithiasis"),
    ("eczema", "atopic dermatitis"), ("strep throat", "streptococcal pharyngitis"),
    ("the flu", "influenza"), ("low iron", "iron deficiency anemia"), ("gout", "gout"),
    ("asthma", "asthma"), ("migraines", "migraine"), ("a stomach ulcer", "peptic ulcer disease"),
    ("thinning bones", "osteoporosis"), ("a bladder infection", "cystitis"),
    ("sleep apnea", "obstructive sleep apnea"),
)
DRUGS: tuple[tuple[str, str], ...] = tuple((d, d) for d in (
    "ibuprofen", "acetaminophen", "metformin", "sertraline", "atorvastatin", "amoxicillin",
    "levothyroxine", "omeprazole", "lisinopril", "prednisone", "naproxen", "fluoxetine",
    "gabapentin", "warfarin", "cetirizine", "azithromycin"))
DOCUMENTS: tuple[tuple[str, str], ...] = tuple((d, d) for d in (
    "a will", "a lease", "a power of attorney", "a prenuptial agreement",
    "a non-disclosure agreement", "an employment contract", "a living trust", "a bill of sale",
    "a partnership agreement",
    "a quitclaim deed"))
ACCOUNTS: tuple[tuple[str, str], ...] = tuple((d, d) for d in (
    "a Roth IRA", "a 401(k)", "a health savings account", "a 529 plan", "a traditional IRA",
    "a certificate of deposit", "a brokerage account", "a money market account"))
DEVICES: tuple[tuple[str, str], ...] = tuple((d, d) for d in (
    "my laptop", "my phone", "my router", "my printer", "my smart TV", "my tablet",
    "my game console", "my smartwatch", "my desktop computer", "my external hard drive"))
FOODS: tuple[tuple[str, str], ...] = tuple((d, d) for d in (
    "rice", "quinoa", "chicken breast", "salmon", "lentils", "potatoes", "broccoli",
    "hard-boiled eggs", "pork chops", "brown rice", "sweet potatoes", "tofu"))
CITIES: tuple[tuple[str, str], ...] = tuple((d, d) for d in (
    "Paris", "Tokyo", "Rome", "Lisbon", "Barcelona", "Sydney", "Cairo", "Prague",
    "Vienna", "Istanbul"))

# (domain, subject pool, phrasings of one intent, the subject as {x})
INTENTS: tuple[tuple[str, tuple[tuple[str, str], ...], tuple[str, ...]], ...] = (
    ("medical", CONDITIONS, (
        "What are the symptoms of {x}?", "How do I know if I have {x}?",
        "what signs should i look out for with {x}", "What are the clinical manifestations of {x}?",
        "How can you tell if someone has {x}?")),
    ("medical", CONDITIONS, (
        "How is {x} treated?", "What is the treatment for {x}?",
        "what can i do to get rid of {x}", "What are the therapeutic options for {x}?",
        "How do doctors treat {x}?")),
    ("medical", CONDITIONS, (
        "What causes {x}?", "Why do people get {x}?", "What is the etiology of {x}?",
        "what leads to {x} in the first place")),
    ("medical", CONDITIONS, (
        "How can I prevent {x}?", "What can I do to avoid getting {x}?",
        "What measures reduce the risk of developing {x}?", "how do i stop myself getting {x}")),
    ("medical", CONDITIONS, (
        "Is {x} contagious?", "Can I catch {x} from someone else?",
        "Can {x} be transmitted from person to person?", "can {x} spread to other people")),
    ("medical", CONDITIONS, (
        "What foods should I avoid if I have {x}?", "what should i not eat with {x}",
        "Which dietary restrictions apply to patients with {x}?",
        "Are there foods that make {x} worse?")),
    ("medical", DRUGS, (
        "What are the side effects of {x}?", "Does {x} have any side effects?",
        "What adverse effects are associated with {x}?", "what bad reactions can {x} cause")),
    ("medical", DRUGS, (
        "How much {x} should I take?", "What is the recommended dosage of {x}?",
        "what's the normal dose of {x} for an adult", "What is the standard adult dose of {x}?")),
    ("medical", DRUGS, (
        "Can I drink alcohol while taking {x}?", "Is it safe to have a beer when I'm on {x}?",
        "Is alcohol consumption contraindicated with {x}?", "does {x} mix ok with alcohol")),
    ("medical", DRUGS, (
        "Is {x} safe during pregnancy?", "Can I take {x} while pregnant?",
        "Is {x} contraindicated in pregnancy?", "is it ok to use {x} when expecting a baby")),
    ("medical", DRUGS, (
        "How long does {x} take to work?", "How soon will {x} start working?",
        "What is the onset of action of {x}?", "when will i feel {x} kick in")),
    ("legal", DOCUMENTS, (
        "Do I need a lawyer to write {x}?", "Can I draft {x} myself without an attorney?",
        "Is legal representation required to prepare {x}?", "can i do {x} on my own, no lawyer")),
    ("legal", DOCUMENTS, (
        "Does {x} have to be notarized to be valid?",
        "Is {x} legally binding if it isn't notarized?",
        "Is notarization required for {x} to be enforceable?",
        "do i need a notary for {x} to count")),
    ("legal", DOCUMENTS, (
        "How do I cancel {x}?", "How can I get out of {x}?",
        "What is the procedure to terminate {x}?", "what's the way to end {x} early")),
    ("legal", DOCUMENTS, (
        "Can {x} be changed after it is signed?", "Is it possible to amend {x} once signed?",
        "how do i make changes to {x} after signing it", "Can {x} be modified after execution?")),
    ("finance", ACCOUNTS, (
        "How much can I put into {x} each year?", "What is the annual contribution limit for {x}?",
        "what's the max i can contribute to {x} per year",
        "How much am I allowed to save in {x} annually?")),
    ("finance", ACCOUNTS, (
        "Are withdrawals from {x} taxed?", "Do I pay tax when I take money out of {x}?",
        "What are the tax implications of withdrawing from {x}?",
        "will i owe taxes if i pull money from {x}")),
    ("finance", ACCOUNTS, (
        "How do I open {x}?", "What do I need to set up {x}?",
        "What is the process for opening {x}?", "how can i start {x}")),
    ("tech", DEVICES, (
        "Why is {x} so slow?", "What makes {x} run so slowly?", "how come {x} lags so much",
        "What could cause poor performance on {x}?")),
    ("tech", DEVICES, (
        "How do I reset {x} to factory settings?", "How can I restore {x} to its original "
        "settings?", "whats the way to wipe {x} and start fresh",
        "What is the procedure for a factory reset of {x}?")),
    ("tech", DEVICES, (
        "Why does {x} keep disconnecting from the wifi?", "{x} keeps dropping the wireless "
        "connection, why?", "What causes {x} to lose its Wi-Fi connection repeatedly?",
        "why wont {x} stay connected to the internet")),
    ("tech", DEVICES, (
        "How do I clean {x} safely?", "What is the safest way to clean {x}?",
        "how can i clean {x} without damaging it", "What cleaning method is recommended for {x}?")),
    ("cooking", FOODS, (
        "How long should I cook {x}?", "What is the cooking time for {x}?",
        "how many minutes does {x} need to cook", "For how long do you cook {x}?")),
    ("cooking", FOODS, (
        "Can I freeze {x}?", "Is it okay to put {x} in the freezer?", "Does {x} freeze well?",
        "is freezing {x} a good idea")),
    ("cooking", FOODS, (
        "How long does cooked {x} last in the fridge?",
        "How many days can I keep cooked {x} refrigerated?",
        "whats the shelf life of cooked {x} in the refrigerator",
        "For how long is cooked {x} safe to eat if kept in the fridge?")),
    ("cooking", FOODS, (
        "How do I reheat {x} without drying it out?", "What's the best way to warm up {x} so it "
        "stays moist?", "how can i heat leftover {x} and keep it from getting dry",
        "Which reheating method keeps {x} from drying out?")),
    ("travel", CITIES, (
        "What is the best time of year to visit {x}?", "When should I go to {x}?",
        "which month is ideal for a trip to {x}", "What season is recommended for traveling to "
        "{x}?")),
    ("travel", CITIES, (
        "How do I get from the airport to the center of {x}?",
        "What is the easiest way to reach downtown {x} from the airport?",
        "best way to get into {x} city centre from the airport",
        "Which transport connects the airport with central {x}?")),
    ("travel", CITIES, (
        "Is {x} safe for tourists?", "Is it dangerous to travel to {x} as a tourist?",
        "how safe is {x} for visitors", "Should tourists worry about their safety in {x}?")),
    ("travel", CITIES, (
        "How many days do I need to see {x}?", "How long should a trip to {x} be?",
        "how much time should i spend in {x}", "What is a good length of stay for visiting {x}?")),
)

HELD_OUT_DOMAINS = frozenset({"finance", "tech", "cooking", "travel"})

# A narrower question shares nearly every word with the general one (cosine often above 0.85)
# but may need another answer: the near miss most of QQP's false hits in 0.85..0.95 look like.
QUALIFIERS: tuple[str, ...] = (
    "in children", "for someone over 70", "during pregnancy", "in winter", "at night",
    "for the first time", "after surgery", "in an emergency", "in the UK", "on a tight budget",
    "for a small business", "in a hurry")


def intent_split(number: int) -> str:
    """Which split an intent's pairs belong to: held-out domains and every fourth intent are
    test only, the intent before each of those is validation."""
    if INTENTS[number][0] in HELD_OUT_DOMAINS or number % 4 == 3:
        return "test"
    return "validation" if number % 4 == 2 else "train"


def rephrase_pairs(seed: int, split: str, per_pair: int = 4) -> Iterator[Example]:
    """Positives and near-miss negatives from the intents of `split` (see module docstring).
    Each pair of phrasings of an intent is filled with `per_pair` random subjects."""
    rng = random.Random(seed)  # nosec B311 # training data generation, not a secret
    for number, (domain, pool, phrasings) in enumerate(INTENTS):
        if intent_split(number) != split:
            continue
        others = [n for n, intent in enumerate(INTENTS) if intent[1] is pool and n != number]
        for first, second in combinations(phrasings, 2):
            for _ in range(per_pair):
                yield from _pairs_for(rng, domain, pool, first, second, others, split == "test")


def _pairs_for(rng: random.Random, domain: str, pool: Sequence[tuple[str, str]], first: str,
               second: str, others: Sequence[int], narrower: bool) -> Iterator[Example]:
    subject, sibling = rng.sample(list(pool), 2)
    lay, expert = subject if rng.random() < 0.5 else (subject[0], subject[0])
    a = first.format(x=lay)
    yield Example(a, second.format(x=expert), 1, f"re-{domain}-keep")
    yield Example(a, second.format(x=rng.choice(sibling)), 0, f"re-{domain}-sibling")
    other = rng.choice(INTENTS[rng.choice(others)][2])
    yield Example(a, other.format(x=rng.choice(subject)), 0, f"re-{domain}-intent")
    if narrower:  # test only: training on them was measured worse (docs/cache-quality.md)
        qualifier = QUALIFIERS[(len(a) + len(second)) % len(QUALIFIERS)]
        yield Example(a, _narrowed(second.format(x=expert), qualifier), 0,
                      f"re-{domain}-narrower")


def _narrowed(question: str, qualifier: str) -> str:
    """The question about a narrower case: "... of gout?" -> "... of gout in children?"."""
    body = question.rstrip(" ?.")
    return body + f" {qualifier}" + question[len(body):]
