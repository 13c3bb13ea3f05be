"""Word lists the match guards use to judge *what kind* of words differ between two texts.

Hand-written (no model, no training data). Lists are deliberately general: the guards fall back
to structural rules (any one-to-one content-word substitution is suspicious), so a missing entry
costs a little recall or is caught elsewhere, it does not open a false hit by itself.
"""

from __future__ import annotations


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


STOPWORDS = _words(
    """a an the is are was were be been being am do does did doing done have has had having
    i me my mine myself we us our ours you your yours he him his she her hers it its they them
    their theirs this that these those there here what which who whom whose when where why how
    and or but if then so as of at on in for about also just can could would should will shall
    may might must any some such very too quite really actually exactly please kindly
    s t d ll m re ve o y get got gets getting one ones thing things way ways someone something
    anyone anything all each every both either tell know explain give show help want need
    let lets like make makes making use using used go going"""
)

# Words that pad or frame a request without changing what is asked ("steps to", "best way to").
FILLER = _words(
    """best good better great easy easiest easily simple simply possible possibly quick quickly
    fastest step steps tip tips method methods process guide guidance idea ideas advice
    suggest suggestion suggestions recommend recommendation recommendations option options
    mean meaning means learn find found look looking help helpful important main basic
    different difference differences kind kinds type types sort exist exists available
    list describe summary summarize summarise overview detail details detailed brief briefly
    term terms word words question answer answers people person someone anybody somebody
    online today nowadays ever never actually correct correctly proper properly right
    write writing written say said saying reason reasons cause causes why"""
)

NEGATORS = _words("not no never without none nothing nobody neither nor cannot")

# Words that carry a negation inside them ("toxic" ~ "not safe"); used only to excuse an
# unbalanced "not" on the other side.
IMPLICIT_NEGATIVE = _words(
    """toxic unsafe dangerous harmful poisonous bad impossible illegal unable fail fails failed
    failing broken lack lacks missing avoid wrong false incorrect unhealthy absent free"""
)

_ANTONYM_PAIRS = """
ascending:descending increase:decrease increasing:decreasing increased:decreased
increase:reduce raise:lower higher:lower high:low more:less more:fewer most:least
max:min maximum:minimum largest:smallest biggest:smallest bigger:smaller big:small
large:small larger:smaller longest:shortest longer:shorter long:short tallest:shortest
taller:shorter faster:slower fastest:slowest fast:slow older:younger oldest:youngest
old:young old:new newer:older newest:oldest early:late earlier:later earliest:latest
before:after above:below over:under up:down upload:download import:export input:output
buy:sell buying:selling bought:sold borrow:lend lend:borrow win:lose won:lost beat:lose
beat:lost winner:loser win:loss gain:lose gain:loss profit:loss add:remove added:removed
enable:disable enabled:disabled encrypt:decrypt encode:decode compress:decompress
install:uninstall open:close start:stop start:end begin:end first:last
good:bad best:worst better:worse good:evil positive:negative pro:con pros:cons
advantage:disadvantage advantages:disadvantages benefit:drawback benefits:drawbacks
safe:unsafe safe:dangerous safe:toxic healthy:unhealthy legal:illegal possible:impossible
true:false right:wrong correct:incorrect success:failure succeed:fail pass:fail
hot:cold warm:cold heat:cool heating:cooling wet:dry cheap:expensive cheapest:expensive
cheaper:expensive rich:poor strong:weak stronger:weaker hard:easy harder:easier hard:soft
male:female men:women man:woman boy:girl husband:wife father:mother son:daughter
brother:sister king:queen left:right north:south east:west northern:southern
eastern:western inside:outside internal:external in:out on:off with:without include:exclude
including:excluding inclusive:exclusive accept:reject allow:deny allow:block like:dislike
love:hate agree:disagree always:never all:none everything:nothing everyone:nobody
upper:lower uppercase:lowercase horizontal:vertical horizontally:vertically
forward:backward forwards:backwards import:export push:pull send:receive sent:received
teacher:student employer:employee landlord:tenant buyer:seller parent:child parents:children
light:dark lighter:darker front:back top:bottom inner:outer plus:minus add:subtract
multiply:divide sum:difference even:odd asleep:awake alive:dead living:dead
online:offline public:private client:server local:remote synchronous:asynchronous
sync:async static:dynamic mutable:immutable lazy:eager"""

ANTONYMS: frozenset[frozenset[str]] = frozenset(
    frozenset(pair.split(":")) for pair in _ANTONYM_PAIRS.split()
)

# Antonyms that flip with their arguments: "A faster than B" == "B slower than A".
CONVERSE_WORDS = _words(
    """faster slower fastest slowest bigger smaller larger taller shorter older younger
    higher lower more less fewer better worse before after above below over under beat lose
    lost won win buy sell bought sold lend borrow teacher student parent child parents
    children employer employee landlord tenant buyer seller husband wife send receive
    sent received"""
)

# Role markers: which slot an argument fills ("from X", "to Y", "than Z").
ROLE_MARKERS = _words("from to into onto toward towards than versus vs against by after before")

# Connectors that make an argument order irrelevant ("A and B" == "B and A").
SYMMETRIC_CONNECTORS = _words("and or vs versus & , / between with")

SYNONYMS: dict[str, str] = {
    "large": "big",
    "huge": "big",
    "little": "small",
    "tiny": "small",
    "quick": "fast",
    "rapid": "fast",
    "purchase": "buy",
    "begin": "start",
    "commence": "start",
    "film": "movie",
    "films": "movie",
    "automobile": "car",
    "assist": "help",
    "postgres": "postgresql",
    "js": "javascript",
    "ts": "typescript",
    "py": "python",
    "mac": "macos",
    "osx": "macos",
    "america": "usa",
    "american": "usa",
    "americans": "usa",
    "british": "britain",
    "england": "britain",
    "kilometer": "km",
    "kilometers": "km",
    "kilometre": "km",
    "kilometres": "km",
    "kms": "km",
    "mile": "mi",
    "miles": "mi",
    "gram": "g",
    "grams": "g",
    "gr": "g",
    "kilogram": "kg",
    "kilograms": "kg",
    "kgs": "kg",
    "ounce": "oz",
    "ounces": "oz",
    "pound": "lb",
    "pounds": "lb",
    "lbs": "lb",
    "gigabyte": "gb",
    "gigabytes": "gb",
    "megabyte": "mb",
    "megabytes": "mb",
    "terabyte": "tb",
    "terabytes": "tb",
    "minute": "min",
    "minutes": "min",
    "mins": "min",
    "hour": "h",
    "hours": "h",
    "hr": "h",
    "hrs": "h",
    "seconds": "sec",
    "secs": "sec",
    "percent": "%",
    "percentage": "%",
    "pct": "%",
    "dollar": "usd",
    "dollars": "usd",
    "$": "usd",
    "bucks": "usd",
    "euro": "eur",
    "euros": "eur",
    "€": "eur",
    "£": "gbp",
    "meter": "m",
    "meters": "m",
    "metre": "m",
    "metres": "m",
    "centimeter": "cm",
    "centimeters": "cm",
    "inch": "in_",
    "inches": "in_",
    "foot": "ft",
    "feet": "ft",
    "celsius": "c_deg",
    "fahrenheit": "f_deg",
    "liter": "l",
    "liters": "l",
    "litre": "l",
    "litres": "l",
    "gallon": "gal",
    "gallons": "gal",
    "ml": "ml",
    "milliliters": "ml",
    "summary": "summarize",
    "summarise": "summarize",
    "founder": "found",
    "founders": "found",
    "founded": "found",
    "colour": "color",
    "favourite": "favorite",
    "programme": "program",
    "toward": "towards",
    "vs.": "vs",
    "versus": "vs",
    "doesnt": "does",
    "dont": "do",
}

UNITS = _words(
    """km mi g kg oz lb gb mb tb kb min h sec day days week weeks month months year years
    % usd eur gbp jpy inr cad aud m cm mm in_ ft c_deg f_deg l gal ml mph kph ghz mhz hz
    kw w v mah calories calorie kcal"""
)

NUMBER_WORDS: dict[str, int] = {
    "zero": 0,
    "one": 1,
    "two": 2,
    "three": 3,
    "four": 4,
    "five": 5,
    "six": 6,
    "seven": 7,
    "eight": 8,
    "nine": 9,
    "ten": 10,
    "eleven": 11,
    "twelve": 12,
    "thirteen": 13,
    "fourteen": 14,
    "fifteen": 15,
    "sixteen": 16,
    "seventeen": 17,
    "eighteen": 18,
    "nineteen": 19,
    "twenty": 20,
    "thirty": 30,
    "forty": 40,
    "fifty": 50,
    "sixty": 60,
    "seventy": 70,
    "eighty": 80,
    "ninety": 90,
    "hundred": 100,
    "thousand": 1000,
    "million": 1_000_000,
    "billion": 1_000_000_000,
    "dozen": 12,
}

# Fractions spelled out; not in NUMBER_WORDS, whose values are whole numbers that combine
# ("twenty five"): "half" there was 0, the same number as "zero".
FRACTION_WORDS: dict[str, str] = {"half": "0.5"}

# Names whose usual short form is also a common word (the Go language vs the verb): the long
# form is a name, the short one stays a stop word.
ENTITY_ALIASES: dict[str, str] = {"golang": "go"}

ORDINAL_WORDS: dict[str, int] = {
    "first": 1,
    "second": 2,
    "third": 3,
    "fourth": 4,
    "fifth": 5,
    "sixth": 6,
    "seventh": 7,
    "eighth": 8,
    "ninth": 9,
    "tenth": 10,
    "eleventh": 11,
    "twelfth": 12,
    "twentieth": 20,
    "hundredth": 100,
    "last": -1,
}

# Names the guards treat as entities even when written in lower case.
KNOWN_ENTITIES = _words(
    """english french german spanish italian portuguese chinese mandarin cantonese japanese
    korean russian arabic hindi urdu bengali dutch swedish norwegian danish finnish polish
    turkish greek hebrew latin persian farsi thai vietnamese indonesian malay swahili ukrainian
    czech hungarian romanian tamil telugu punjabi
    python javascript typescript java kotlin scala swift rust ruby php perl c c++ c# f#
    haskell elixir erlang clojure lua r matlab julia dart bash powershell sql mysql postgresql
    sqlite mongodb redis oracle html css json yaml xml csv markdown latex pdf excel docker
    kubernetes react angular vue django flask rails node nodejs spring pandas numpy
    windows macos linux ubuntu debian fedora android ios iphone ipad chrome firefox safari
    microsoft apple google amazon facebook meta netflix tesla samsung ibm intel amd nvidia
    twitter instagram youtube whatsapp linkedin uber airbnb spotify
    usa britain canada mexico brazil argentina chile peru colombia france germany spain italy
    portugal austria australia switzerland sweden norway denmark finland poland russia
    ukraine turkey greece egypt nigeria kenya india pakistan bangladesh china japan korea
    vietnam thailand indonesia philippines malaysia singapore iran iraq israel
    london paris berlin munich rome madrid tokyo seoul beijing shanghai delhi mumbai
    moscow sydney toronto york chicago boston texas california florida
    ibuprofen acetaminophen paracetamol aspirin naproxen amoxicillin penicillin insulin
    cat cats dog dogs horse horses cow rabbit bird fish
    haiku limerick sonnet poem essay tweet email letter story song table
    monday tuesday wednesday thursday friday saturday sunday january february march april
    june july august september october november december spring summer autumn winter"""
)
