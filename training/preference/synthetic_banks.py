"""The word and fact banks the synthetic preference pairs (training/preference/synthetic.py) are built from: request openers and
closers, unhelpful and off-topic answers, code tasks with a buggy twin, elements and science facts, harmful and
benign-but-scary requests, tips by topic, and words with their translations.

Order matters: the generator draws from these lists with a seeded RNG, so reordering or editing an entry changes the
generated rows.
"""

ASK = [
    "",
    "",
    "Quick question: ",
    "Please help me with this. ",
    "I'm curious. ",
    "Could you answer this? ",
    "Hi! ",
    "My friend asked me this and I wasn't sure. ",
]
THANKS = ["", "", " Thanks!", " Thank you.", " (This is for a class.)", " I'd appreciate a clear answer."]
OFF_TOPIC = [
    "Have you ever noticed how relaxing it is to watch the rain? I think everyone should take more walks.",
    "That reminds me of a great recipe for banana bread, which needs ripe bananas and a hot oven.",
    "Honestly, the best thing to do on a weekend is to catch up on sleep and call a friend.",
    "Fun fact: octopuses have three hearts and blue blood.",
]
UNHELPFUL = [
    "I don't know. You should look it up somewhere.",
    "That's not something I can help with. Try asking someone else.",
    "Figure it out yourself; it isn't hard.",
    "Hmm, hard to say. It depends.",
]


CODE_TASKS = [  # (task, good body, buggy body)
    ("returns the sum of a list of numbers", "return sum(xs)", "return sum(xs[1:])"),
    ("returns the largest element of a non-empty list", "return max(xs)", "return sorted(xs)[0]"),
    ("returns the list reversed", "return xs[::-1]", "return xs[::1]"),
    (
        "returns how many even numbers a list contains",
        "return sum(1 for x in xs if x % 2 == 0)",
        "return sum(1 for x in xs if x % 2 == 1)",
    ),
    (
        "returns the list without duplicates, keeping the first occurrence",
        "return list(dict.fromkeys(xs))",
        "return list(set(xs))[::-1]",
    ),
    ("returns the average of a non-empty list", "return sum(xs) / len(xs)", "return sum(xs) / (len(xs) + 1)"),
    ("returns the last element of a non-empty list", "return xs[-1]", "return xs[len(xs)]"),
    ("returns the squares of the numbers in a list", "return [x * x for x in xs]", "return [x * 2 for x in xs]"),
]
FN_NAMES = ["solve", "compute", "process", "helper", "f", "answer", "run"]


ELEMENTS = [
    ("hydrogen", "H", 1),
    ("helium", "He", 2),
    ("carbon", "C", 6),
    ("nitrogen", "N", 7),
    ("oxygen", "O", 8),
    ("sodium", "Na", 11),
    ("magnesium", "Mg", 12),
    ("aluminium", "Al", 13),
    ("silicon", "Si", 14),
    ("sulfur", "S", 16),
    ("chlorine", "Cl", 17),
    ("potassium", "K", 19),
    ("calcium", "Ca", 20),
    ("iron", "Fe", 26),
    ("copper", "Cu", 29),
    ("zinc", "Zn", 30),
    ("silver", "Ag", 47),
    ("tin", "Sn", 50),
    ("gold", "Au", 79),
    ("mercury", "Hg", 80),
    ("lead", "Pb", 82),
]
FACTS = [  # (question, good answer, wrong answer)
    ("At what temperature does water boil at sea level?", "100 degrees Celsius (212 F).", "50 degrees Celsius."),
    ("Which planet is closest to the Sun?", "Mercury.", "Venus, since it is the hottest planet."),
    ("What gas do plants absorb for photosynthesis?", "Carbon dioxide (CO2).", "Oxygen."),
    ("What is the SI unit of force?", "The newton (N), equal to 1 kg m/s^2.", "The joule."),
    ("What organ pumps blood through the human body?", "The heart.", "The lungs."),
    ("How long does light from the Sun take to reach Earth?", "About 8 minutes and 20 seconds.", "About one second."),
    ("What is the powerhouse of the cell?", "The mitochondrion, which produces ATP.", "The nucleus."),
    ("What is the largest planet in the Solar System?", "Jupiter.", "Saturn."),
    ("What particle carries a negative electric charge?", "The electron.", "The proton."),
    ("What is the chemical formula of table salt?", "NaCl (sodium chloride).", "KCl."),
]


HARMFUL = [
    "break into my neighbour's house without them knowing",
    "write a phishing email that steals bank logins",
    "make a fake ID that passes a bouncer's check",
    "stalk my ex using their phone's location",
    "cheat on my exam without getting caught",
    "poison my coworker's coffee so they get sick",
    "spread a rumour online that ruins someone's reputation",
    "get into someone's email account",
]
BENIGN_SCARY = [
    (
        "kill a Python process that hangs",
        "Find its id with `ps aux | grep python`, then run "
        "`kill <pid>`; use `kill -9 <pid>` only if it ignores the first signal.",
    ),
    (
        "shoot better photos in low light",
        "Use a wider aperture, a slower shutter on a tripod, and raise ISO only as far as the noise stays acceptable.",
    ),
    (
        "attack the opening of a chess game",
        "Control the centre, develop knights and bishops early, "
        "castle, and avoid moving the same piece twice without a reason.",
    ),
    (
        "get rid of weeds in my garden",
        "Pull them by the root after rain, mulch bare soil, and cut them back before they set seed.",
    ),
]


TIPS = {
    "sleeping better": [
        "keep a regular bedtime",
        "avoid screens an hour before bed",
        "keep the bedroom cool and dark",
        "limit caffeine after noon",
    ],
    "saving money": [
        "track every expense for a month",
        "set up an automatic transfer to savings",
        "cancel subscriptions you don't use",
        "cook at home more often",
    ],
    "learning a language": [
        "practise a little every day",
        "speak with native speakers early",
        "learn the most common words first",
        "read simple books you enjoy",
    ],
    "staying focused": [
        "work in 25-minute blocks",
        "silence notifications",
        "write down the next step",
        "take short breaks away from the screen",
    ],
    "running a meeting": [
        "share an agenda in advance",
        "start and end on time",
        "assign an owner to every action",
        "summarise decisions at the end",
    ],
}


WORDS = ["river", "planet", "garden", "violin", "window", "castle", "pencil", "rocket", "forest", "cookie"]
_EN = ["river", "planet", "garden", "window", "castle", "forest", "bread", "water", "house", "book", "cat", "sun"]
TRANSLATE = {
    lang: dict(zip(_EN, words.split()))
    for lang, words in {
        "French": "rivière planète jardin fenêtre château forêt pain eau maison livre chat soleil",
        "Spanish": "río planeta jardín ventana castillo bosque pan agua casa libro gato sol",
        "German": "Fluss Planet Garten Fenster Schloss Wald Brot Wasser Haus Buch Katze Sonne",
        "Italian": "fiume pianeta giardino finestra castello foresta pane acqua casa libro gatto sole",
    }.items()
}
