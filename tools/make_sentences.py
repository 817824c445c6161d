"""Regenerate ``sentences.txt``: the default sentence set the audio-image bridge is fitted on.

    python tools/make_sentences.py > mmsearch/bridge/sentences.txt

Each family below pairs hand-written vocabularies with several sentence shapes; a seeded random
generator picks combinations, so the output is the same on every run and every machine. The lines
describe sounds, scenes and objects in the plain words people type into a search box, so CLAP's and
CLIP's text towers both have something to say about them.
"""
from __future__ import annotations

import random
import sys
from typing import Callable

SEED = 20240611
PER_FAMILY = 330

ANIMALS = {
    "dog": ["barking", "growling", "whining", "howling", "panting", "yelping"],
    "puppy": ["whimpering", "yapping", "playing with a squeaky toy"],
    "cat": ["meowing", "purring", "hissing", "yowling at night"],
    "kitten": ["mewing softly", "chasing a ball of yarn"],
    "horse": ["neighing", "galloping", "snorting", "trotting on cobblestones"],
    "cow": ["mooing", "chewing grass", "walking through a muddy field"],
    "sheep": ["bleating", "grazing on a hillside"],
    "goat": ["bleating loudly", "climbing on rocks"],
    "pig": ["oinking", "grunting in the mud", "squealing"],
    "rooster": ["crowing at dawn", "strutting around the yard"],
    "hen": ["clucking", "pecking at seeds"],
    "duck": ["quacking", "splashing in a pond"],
    "goose": ["honking", "flapping its wings"],
    "owl": ["hooting in the dark", "sitting on a branch"],
    "crow": ["cawing", "perched on a fence"],
    "seagull": ["crying over the harbor", "diving for fish"],
    "songbird": ["singing a melody", "chirping at sunrise"],
    "woodpecker": ["drumming on a tree trunk", "tapping on bark"],
    "frog": ["croaking", "jumping into a pond"],
    "cricket": ["chirping on a summer night"],
    "bee": ["buzzing around flowers", "hovering near a hive"],
    "mosquito": ["whining near someone's ear"],
    "lion": ["roaring", "resting in the tall grass"],
    "elephant": ["trumpeting", "spraying water with its trunk"],
    "wolf": ["howling at the moon", "running through the snow"],
    "monkey": ["screeching in the trees", "swinging from a branch"],
    "whale": ["singing underwater", "breaching the surface"],
    "dolphin": ["clicking and whistling", "leaping out of the water"],
    "parrot": ["squawking", "repeating words"],
    "donkey": ["braying", "carrying a heavy load"],
}
HABITATS = {
    "home": ["in the backyard", "in the living room", "outside the window", "in a city park", "at night", "in the rain"],
    "farm": ["on a farm", "in a barn", "in a field", "on a quiet morning", "in the distance", "in the rain"],
    "wild": ["in the forest", "at the zoo", "in the distance", "at night", "near a river", "on a nature documentary"],
    "water": ["near a river", "by the lake", "on the beach", "in the distance", "at dawn"],
    "air": ["in the forest", "in a city park", "outside the window", "on a quiet morning", "by the lake", "in the distance"],
}
HABITAT_OF = {
    "dog": "home", "puppy": "home", "cat": "home", "kitten": "home", "parrot": "home",
    "horse": "farm", "cow": "farm", "sheep": "farm", "goat": "farm", "pig": "farm", "rooster": "farm",
    "hen": "farm", "donkey": "farm", "goose": "farm",
    "lion": "wild", "elephant": "wild", "wolf": "wild", "monkey": "wild",
    "whale": "water", "dolphin": "water", "frog": "water", "duck": "water", "seagull": "water",
    "owl": "air", "crow": "air", "songbird": "air", "woodpecker": "air", "cricket": "air", "bee": "air", "mosquito": "air",
}

VEHICLES = {
    "car": ["driving past", "honking its horn", "starting its engine", "idling at a red light", "skidding on wet asphalt"],
    "motorcycle": ["revving its engine", "speeding down the highway", "roaring past"],
    "truck": ["reversing with a beeping alarm", "rumbling down the road", "braking hard"],
    "bus": ["pulling up to the stop", "opening its doors", "driving through the city"],
    "train": ["passing at high speed", "blowing its whistle", "rattling over the tracks", "arriving at the station"],
    "subway train": ["screeching into the station", "rumbling through a tunnel"],
    "tram": ["ringing its bell", "gliding along the street"],
    "airplane": ["taking off", "flying overhead", "landing on the runway"],
    "helicopter": ["hovering above", "flying low over the rooftops"],
    "ambulance": ["racing by with its siren on", "stuck in traffic with lights flashing"],
    "police car": ["speeding past with sirens wailing", "parked with flashing lights"],
    "fire truck": ["blaring its horn", "rushing to an emergency"],
    "bicycle": ["ringing its bell", "rolling down a hill", "with a squeaky chain"],
    "boat": ["motoring across the bay", "bobbing in the harbor"],
    "ship": ["sounding its foghorn", "leaving the port"],
    "tractor": ["plowing a field", "chugging along a dirt road"],
    "scooter": ["buzzing through narrow streets", "weaving between cars"],
    "race car": ["zooming around the track", "screeching around a corner"],
}
VEHICLE_SHAPES = [
    "a {v} {a}", "the sound of a {v} {a}", "an old {v} {a}", "a {v} {a} {p}", "a noisy {v} {a} {p}",
]
VEHICLE_PLACES = ["on a busy street", "in the rain", "at night", "in the countryside", "near the station", "on a bridge", "in heavy traffic"]

WEATHER = [
    ("heavy rain", ["falling on a tin roof", "pouring onto the pavement", "drumming on a car roof", "hitting the window"]),
    ("light rain", ["pattering on leaves", "dripping from the gutter", "falling on an umbrella"]),
    ("a thunderstorm", ["rolling in over the hills", "with loud cracks of thunder", "at night with flashes of lightning"]),
    ("strong wind", ["howling through the trees", "rattling the shutters", "whistling past the house", "blowing across an open field"]),
    ("a gentle breeze", ["rustling the leaves", "moving through tall grass"]),
    ("hail", ["bouncing off a car", "clattering on the roof"]),
    ("snow", ["crunching underfoot", "falling silently on a quiet street", "sliding off a roof"]),
    ("ocean waves", ["crashing on the rocks", "washing onto a sandy beach", "lapping against a pier"]),
    ("a river", ["flowing over stones", "rushing after a storm"]),
    ("a waterfall", ["thundering into a pool", "splashing down a cliff"]),
    ("a stream", ["babbling through the woods", "trickling between mossy rocks"]),
    ("a campfire", ["crackling under the stars", "popping and hissing"]),
    ("a forest", ["alive with birdsong", "silent after snowfall", "full of insects at dusk"]),
]
WEATHER_SHAPES = ["{s} {a}", "the sound of {s} {a}", "recording of {s} {a}", "{s} {a}, recorded up close"]

INSTRUMENTS = [
    "piano", "acoustic guitar", "electric guitar", "bass guitar", "violin", "cello", "double bass", "flute",
    "clarinet", "saxophone", "trumpet", "trombone", "french horn", "tuba", "harp", "accordion", "harmonica",
    "banjo", "ukulele", "mandolin", "drum kit", "snare drum", "bongos", "tambourine", "xylophone", "marimba",
    "church organ", "synthesizer", "bagpipe", "sitar", "oboe", "steel drum",
]
PLAYING = [
    "a slow melody", "a fast solo", "a cheerful tune", "a sad song", "scales", "a jazz riff", "a lullaby",
    "a classical piece", "a simple chord progression", "an improvised passage",
]
INSTRUMENT_SHAPES = [
    "someone playing {m} on the {i}", "a {i} playing {m}", "a musician practicing {m} on a {i}",
    "solo {i} performing {m}", "a child learning to play the {i}", "a duet for {i} and piano playing {m}",
    "a street performer playing the {i}", "close-up of a {i} on a stage",
]
GENRES = [
    "rock", "jazz", "blues", "country", "hip hop", "reggae", "heavy metal", "classical", "electronic dance",
    "folk", "funk", "gospel", "punk", "opera", "techno", "bossa nova", "salsa", "bluegrass", "disco", "lo-fi",
    "ambient", "flamenco", "k-pop", "soul", "orchestral film",
]
GENRE_SHAPES = [
    "an upbeat {g} song", "a slow {g} ballad", "{g} music playing in a bar", "a live {g} concert with a cheering crowd",
    "{g} music on an old radio", "a {g} band rehearsing in a garage", "instrumental {g} with a strong beat",
    "{g} music coming from a car stereo", "a {g} track with a female singer", "a {g} track with a male vocalist",
]

SPEAKERS = [
    "a man", "a woman", "a child", "an old man", "an elderly woman", "a teenager", "a young girl", "a little boy",
    "a teacher", "a news anchor", "a tour guide", "a sports commentator", "a flight attendant", "a police officer",
    "a doctor", "a salesperson", "two friends", "a group of students", "a couple", "a crowd",
]
SPEECH_ACTS = [
    "giving a speech to a large audience", "talking on the phone", "whispering a secret", "laughing loudly",
    "shouting across the street", "reading a story aloud", "arguing in the kitchen", "singing in the shower",
    "making an announcement over a loudspeaker", "telling a joke", "counting from one to ten", "crying quietly",
    "speaking in a foreign language", "giving directions to a tourist", "cheering at a game", "coughing and sneezing",
    "chatting over coffee", "ordering food at a counter", "praying softly", "humming a tune",
]
SPEECH_PLACES = ["", " in a quiet room", " in a noisy cafe", " on a train", " outdoors", " in a large hall", " in a car"]

HOUSEHOLD = [
    "a vacuum cleaner running", "a washing machine spinning", "a dishwasher humming", "a microwave beeping",
    "a kettle whistling", "a toaster popping", "a blender crushing ice", "a hair dryer blowing", "a door creaking open",
    "a door slamming shut", "keys jingling", "a clock ticking", "an alarm clock ringing", "a phone vibrating on a table",
    "a doorbell ringing", "someone knocking on a door", "a toilet flushing", "water running from a tap",
    "a shower running", "dishes clattering in the sink", "a refrigerator humming", "frying food sizzling in a pan",
    "a pot boiling over", "a chair scraping on the floor", "footsteps on a wooden floor", "someone typing on a keyboard",
    "a mouse clicking", "pages of a book turning", "a zipper being pulled", "a drawer sliding shut", "glass shattering",
    "a baby crying in a crib", "a smoke alarm beeping", "a fan whirring", "a sewing machine running",
    "someone chopping vegetables", "coffee being poured into a mug", "ice cubes clinking in a glass",
    "a bottle being opened", "a printer printing pages",
]
HOUSEHOLD_SHAPES = ["{h}", "{h} in the kitchen", "{h} late at night", "{h} in an empty apartment", "the sound of {h}", "{h} while rain falls outside"]

CITY = [
    "traffic at a busy intersection", "a crowded market", "a construction site with jackhammers",
    "a pedestrian crossing beeping", "people walking on a sidewalk", "a busy train station", "an airport terminal",
    "a subway platform at rush hour", "a street festival", "a parking garage", "church bells ringing",
    "a fountain in a town square", "a busy restaurant", "a shopping mall", "a street musician on a corner",
    "an outdoor cafe", "a playground full of children", "a car alarm going off", "garbage trucks collecting bins",
    "a protest march with chanting", "fireworks over the city", "a night club with loud music",
]
CITY_SHAPES = ["{c}", "{c} in the morning", "{c} at night", "{c} on a rainy day", "ambient sound of {c}", "{c} during a summer evening"]

TOOLS = {
    "hammer": ["hammering nails into wood", "pounding a metal sheet"],
    "power drill": ["drilling into a wall", "screwing in bolts"],
    "chainsaw": ["cutting down a tree", "sawing through logs"],
    "hand saw": ["cutting a wooden plank"],
    "lawn mower": ["cutting the grass", "starting up in the garden"],
    "leaf blower": ["clearing a driveway"],
    "angle grinder": ["grinding metal with sparks flying", "cutting a steel pipe"],
    "sander": ["smoothing a wooden table"],
    "jackhammer": ["breaking up concrete"],
    "welding torch": ["welding two pieces of metal"],
    "axe": ["splitting firewood"],
    "shovel": ["digging in gravel", "scraping snow off a path"],
    "broom": ["sweeping a dusty floor"],
    "pair of scissors": ["cutting paper"],
    "typewriter": ["typing a letter"],
    "sewing machine": ["stitching fabric"],
}
TOOL_SHAPES = ["a {t} {a}", "someone using a {t}, {a}", "a worker with a {t} {a}", "close recording of a {t} {a}"]

SPORTS = [
    ("soccer", "a soccer ball", ["kicked across a field", "hitting the goal post"]),
    ("basketball", "a basketball", ["bouncing on a gym floor", "swishing through the net"]),
    ("tennis", "a tennis ball", ["hit back and forth", "bouncing on a clay court"]),
    ("baseball", "a baseball bat", ["cracking against a ball", "swinging through the air"]),
    ("golf", "a golf club", ["striking a ball on the fairway"]),
    ("table tennis", "a ping pong ball", ["bouncing on the table"]),
    ("bowling", "a bowling ball", ["knocking down pins", "rolling down the lane"]),
    ("ice hockey", "a hockey puck", ["sliding across the ice", "slammed against the boards"]),
    ("boxing", "boxing gloves", ["hitting a punching bag"]),
    ("skateboarding", "a skateboard", ["rolling over concrete", "landing a jump"]),
    ("swimming", "swimmers", ["splashing in a pool", "diving off the starting blocks"]),
    ("running", "runners", ["pounding the track", "crossing the finish line"]),
    ("skiing", "skis", ["carving through fresh snow"]),
    ("volleyball", "a volleyball", ["spiked over the net"]),
]
SPORT_SHAPES = [
    "{o} {a}", "a crowd cheering at a {s} match", "a referee blowing a whistle during a {s} game",
    "fans chanting at a {s} stadium", "{o} {a} during {s} practice", "a {s} game on a sunny afternoon",
    "commentators shouting during a {s} final",
]

PEOPLE = [
    "children laughing while playing tag", "a crowd applauding after a performance", "people clapping in rhythm",
    "someone whistling a tune", "a person snoring loudly", "a baby giggling", "footsteps running on gravel",
    "someone walking in high heels", "people dancing at a wedding", "a choir singing in a church",
    "a classroom full of chattering students", "a man chopping wood", "a woman knitting by the fire",
    "a chef cooking in a busy kitchen", "a barista steaming milk", "a family eating dinner", "friends playing cards",
    "a person eating crunchy chips", "someone slurping soup", "a man brushing his teeth", "people splashing in a pool",
    "a child blowing bubbles", "teenagers skateboarding in a park", "a person jogging along the beach",
    "a mechanic repairing a car", "a farmer feeding chickens", "a fisherman casting a line", "a painter at an easel",
    "a carpenter building a cabinet", "a crowd singing happy birthday", "people toasting with glasses",
    "someone opening presents", "a person hiking up a mountain trail", "a person climbing a ladder",
    "children splashing in puddles", "a man snapping his fingers", "a woman tapping her foot", "a gardener watering plants",
]
PEOPLE_SHAPES = ["{p}", "{p} on a weekend", "{p} in the evening", "{p} outdoors", "a recording of {p}", "{p} with music in the background"]

COLORS = ["red", "blue", "green", "yellow", "black", "white", "orange", "purple", "brown", "gray", "pink", "silver"]
SMALL_OBJECTS = [
    "umbrella", "cup of coffee", "guitar", "backpack", "teddy bear", "vase of flowers", "laptop", "clock", "kite",
    "lamp", "suitcase", "pair of shoes", "skateboard", "bowl of fruit", "bottle", "hat", "balloon", "book", "teapot",
    "telephone", "camera", "toy car",
]
LARGE_OBJECTS = ["bicycle", "car", "boat", "bus", "fire hydrant", "mailbox", "bench", "motorcycle", "door", "truck", "tent", "van"]
SMALL_PLACES = [
    "on a wooden table", "in an empty room", "next to a window", "on a kitchen counter", "in a shop window",
    "on a bed", "on a shelf", "on a sandy beach", "in the snow", "under a tree",
]
LARGE_PLACES = [
    "leaning against a brick wall", "on a city sidewalk", "in a grassy field", "in front of a house",
    "at the edge of a lake", "on a rainy street", "in the snow", "under a tree", "in a parking lot",
]
OBJECT_SHAPES = ["a {c} {o} {p}", "a photo of a {c} {o} {p}", "an old {c} {o} {p}", "a small {c} {o} {p}", "close-up of a {c} {o}"]

SCENES = [
    "a quiet library", "a crowded beach in summer", "a mountain lake at sunrise", "a snowy village at night",
    "a desert under a blazing sun", "a foggy harbor", "a busy kitchen in a restaurant", "an empty parking lot",
    "a classroom with desks and a blackboard", "a hospital corridor", "a farm with red barns", "a tropical rainforest",
    "a city skyline at dusk", "a subway car full of commuters", "a cozy living room with a fireplace", "a carnival at night",
    "an office with people at computers", "a garden full of flowers", "a frozen lake with skaters", "a rocky coastline",
    "a football stadium full of fans", "a small bakery in the morning", "a laundromat", "a gym with people lifting weights",
    "a camping site in the woods", "a wedding reception", "a concert hall before the show", "a train crossing a bridge",
]
SCENE_SHAPES = ["{s}", "a picture of {s}", "the atmosphere of {s}", "ambient sound in {s}", "a wide view of {s}", "{s}, seen from above"]


BACKGROUNDS = [
    "rain falling outside", "traffic passing by", "wind blowing", "birds singing", "a television on",
    "people chatting", "music playing softly", "thunder rumbling far away", "waves on the shore",
    "a crowd murmuring", "a dog barking somewhere", "children playing", "an air conditioner humming",
]
MIXTURE_SHAPES = ["{f} with {b} in the background", "{f} while {b}", "{f}, and {b}"]


def _pick(rng: random.Random, items):
    return items[rng.randrange(len(items))]


def _animals(rng: random.Random) -> str:
    animal = _pick(rng, sorted(ANIMALS))
    action = _pick(rng, ANIMALS[animal])
    place = _pick(rng, HABITATS[HABITAT_OF[animal]])
    article = "an" if animal[0] in "aeiou" else "a"
    shape = rng.randrange(5)
    if shape == 0:
        return f"{article} {animal} {action} {place}"
    if shape == 1:
        return f"the sound of {article} {animal} {action}"
    if shape == 2:
        return f"{article} {animal} {action} while people talk nearby"
    if shape == 3:
        return f"a recording of {article} {animal} {action} {place}"
    return f"{place[0].upper()}{place[1:]}, {article} {animal} is {action}"


def _fill(shapes, **choices: list[str]) -> Callable[[random.Random], str]:
    def make(rng: random.Random) -> str:
        return _pick(rng, shapes).format(**{k: _pick(rng, v) for k, v in choices.items()}).replace("  ", " ").strip()
    return make


def _keyed(shapes, table: dict[str, list[str]], key: str, value: str, **extra: list[str]) -> Callable[[random.Random], str]:
    def make(rng: random.Random) -> str:
        name = _pick(rng, sorted(table))
        values = {key: name, value: _pick(rng, table[name]), **{k: _pick(rng, v) for k, v in extra.items()}}
        return _pick(rng, shapes).format(**values)
    return make


def _weather(rng: random.Random) -> str:
    subject, actions = _pick(rng, WEATHER)
    return _pick(rng, WEATHER_SHAPES).format(s=subject, a=_pick(rng, actions))


def _speech(rng: random.Random) -> str:
    return f"{_pick(rng, SPEAKERS)} {_pick(rng, SPEECH_ACTS)}{_pick(rng, SPEECH_PLACES)}"


def _sports(rng: random.Random) -> str:
    sport, thing, actions = _pick(rng, SPORTS)
    return _pick(rng, SPORT_SHAPES).format(s=sport, o=thing, a=_pick(rng, actions))


def _objects(rng: random.Random) -> str:
    things, places = (SMALL_OBJECTS, SMALL_PLACES) if rng.random() < 0.6 else (LARGE_OBJECTS, LARGE_PLACES)
    colour, thing = _pick(rng, COLORS), _pick(rng, things)
    line = _pick(rng, OBJECT_SHAPES).format(c=colour, o=thing, p=_pick(rng, places))
    return line.replace("a orange", "an orange").replace("a old", "an old")


def _mixture(rng: random.Random) -> str:
    foreground = _pick(rng, HOUSEHOLD + PEOPLE)
    return _pick(rng, MIXTURE_SHAPES).format(f=foreground, b=_pick(rng, BACKGROUNDS))


FAMILIES: list[Callable[[random.Random], str]] = [
    _animals,
    _keyed(VEHICLE_SHAPES, VEHICLES, "v", "a", p=VEHICLE_PLACES),
    _weather,
    _fill(INSTRUMENT_SHAPES, i=INSTRUMENTS, m=PLAYING),
    _fill(GENRE_SHAPES, g=GENRES),
    _speech,
    _fill(HOUSEHOLD_SHAPES, h=HOUSEHOLD),
    _fill(CITY_SHAPES, c=CITY),
    _keyed(TOOL_SHAPES, TOOLS, "t", "a"),
    _sports,
    _fill(PEOPLE_SHAPES, p=PEOPLE),
    _objects,
    _fill(SCENE_SHAPES, s=SCENES),
    _mixture,
]


def generate(per_family: int = PER_FAMILY, seed: int = SEED) -> list[str]:
    """Distinct sentences, family by family, in a stable order."""
    rng = random.Random(seed)
    seen: set[str] = set()
    sentences: list[str] = []
    for family in FAMILIES:
        made, attempts = 0, 0
        while made < per_family and attempts < per_family * 40:
            attempts += 1
            line = family(rng)
            line = line[0].upper() + line[1:] if line else line
            if line.lower() not in seen:
                seen.add(line.lower())
                sentences.append(line)
                made += 1
    return sentences


if __name__ == "__main__":
    sys.stdout.write("".join(f"{line}\n" for line in generate()))
