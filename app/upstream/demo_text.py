"""What the demo model says: whole sentences written for each subject, code that runs, short poems.

Nothing here has a slot for the user's words: a reply is put together from these pieces only.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Subject:
    """What the demo model can say about one subject, and the words that point to it."""

    keywords: frozenset[str]
    openings: tuple[str, ...]
    middles: tuple[str, ...]
    points: tuple[str, ...]
    tips: tuple[str, ...]
    list_intros: tuple[str, ...]
    poem_intros: tuple[str, ...]
    offers: tuple[str, ...]


def words(text: str) -> frozenset[str]:
    return frozenset(text.split())


SUBJECTS: tuple[Subject, ...] = (
    Subject(
        keywords=words(
            "nature tree trees forest forests ocean oceans sea seas river rivers lake lakes tide tides "
            "mountain mountains weather rain snow wind climate animal animals bird birds owl owls whale "
            "photosynthesis leaf leaves autumn spring summer winter "
            "whales fish plant plants flower flowers garden glacier glaciers volcano volcanoes oak"
        ),
        openings=(
            "The natural world is easiest to understand as a set of cycles that feed one another.",
            "Most of what happens in nature follows from water, light and time working together.",
        ),
        middles=(
            "Seasons, tides and weather all repeat, but never in quite the same way twice.",
            "Small changes in temperature or rainfall can ripple through a whole landscape.",
        ),
        points=(
            "Living things adapt slowly, over many generations.",
            "Water shapes land more than any other force, given enough time.",
            "Every habitat depends on a balance between what grows and what feeds on it.",
            "Observation over a full year tells you far more than a single visit.",
        ),
        tips=(
            "Keep a simple notebook of what you see and when.",
            "Learn to recognise five common plants or birds near you.",
            "Visit the same place in different seasons.",
            "Read a field guide written for your own region.",
            "Join a local group that records wildlife.",
        ),
        list_intros=("Here are a few ways to get to know the natural world better:",),
        poem_intros=("Here is a short poem about the natural world:",),
        offers=("Would you like to talk about the outdoors today?",),
    ),
    Subject(
        keywords=words(
            "space planet planets moon moons star stars sun galaxy galaxies universe orbit orbits "
            "astronaut astronauts rocket rockets telescope mars jupiter saturn comet comets"
        ),
        openings=(
            "Space is mostly empty, which is why the distances in it are so hard to picture.",
            "Everything in the sky moves, even when it looks perfectly still from here.",
        ),
        middles=(
            "Gravity decides almost everything out there, from the shape of an orbit to the life of a star.",
            "Light from distant objects is old news: it shows them as they were long ago.",
        ),
        points=(
            "Planets travel around their stars on paths set by gravity.",
            "Telescopes collect light that has often travelled for thousands of years.",
            "The Moon always turns the same face towards the Earth.",
            "Stars are born, burn and fade over millions or billions of years.",
        ),
        tips=(
            "Find a dark spot away from street lights.",
            "Give your eyes twenty minutes to adjust to the dark.",
            "Start with the Moon and the brightest planets.",
            "Use a star chart or an app to name what you see.",
            "Try binoculars before you buy a telescope.",
        ),
        list_intros=("Here are a few ways to start exploring the night sky:",),
        poem_intros=("Here is a short poem about the night sky:",),
        offers=("Would you like to talk about space today?",),
    ),
    Subject(
        keywords=words(
            "computer computers software internet ai robot robots data network networks program "
            "programming app apps technology machine machines phone phones website websites digital"
        ),
        openings=(
            "Technology is easiest to understand by following its data: where it comes from, where it goes.",
            "Most software is a chain of small steps, each simple on its own.",
        ),
        middles=(
            "The hard part is rarely a single clever idea; it is making many simple parts work together.",
            "Good tools hide their complexity until you need to look underneath.",
        ),
        points=(
            "Computers follow instructions exactly, mistakes included.",
            "Networks move data in small packets that are put back together at the other end.",
            "A robot combines sensors, a controller and motors in one loop.",
            "Testing a system is often more work than building it.",
        ),
        tips=(
            "Learn one programming language well before trying many.",
            "Break every problem into steps you can test on their own.",
            "Read other people's code as often as you write your own.",
            "Keep backups of anything you cannot afford to lose.",
            "Write down what you learn, so you can find it again.",
        ),
        list_intros=("Here are a few ideas for getting better with technology:",),
        poem_intros=("Here is a short poem about machines and the people who build them:",),
        offers=("Would you like to talk about technology today?",),
    ),
    Subject(
        keywords=words(
            "food cook cooking recipe recipes bread coffee tea bake baking meal meals kitchen soup pasta "
            "rice cake dinner lunch breakfast vegetable vegetables fruit"
        ),
        openings=(
            "Good cooking starts with a few simple ingredients handled with care.",
            "Most recipes are variations on a handful of basic techniques.",
        ),
        middles=(
            "Heat, salt and time do most of the work; the rest is practice.",
            "Tasting as you go matters more than following a recipe to the letter.",
        ),
        points=(
            "Prepare and measure everything before you start.",
            "Season in small steps and taste each time.",
            "Fresh ingredients need less help than you might think.",
            "Rest dough and meat before you cut them.",
        ),
        tips=(
            "Cook one simple dish until you can make it without a recipe.",
            "Keep your knives sharp: it is safer as well as easier.",
            "Clean as you go, so the kitchen never gets out of hand.",
            "Write notes on the recipes you try.",
            "Shop for what is in season.",
        ),
        list_intros=("Here are a few tips for better cooking:",),
        poem_intros=("Here is a short poem about a kitchen at work:",),
        offers=("Would you like to talk about food today?",),
    ),
    Subject(
        keywords=words(
            "health healthy sleep exercise running run walk walking stress diet fitness body heart "
            "muscles rest water habits"
        ),
        openings=(
            "Good health is mostly built from small habits kept up for a long time.",
            "Sleep, movement and food affect one another more than most people expect.",
        ),
        middles=(
            "Steady routines tend to beat short bursts of effort.",
            "Rest is part of training, not a break from it.",
        ),
        points=(
            "A regular bedtime helps more than an occasional long sleep.",
            "Walking every day is one of the simplest forms of exercise.",
            "Drinking enough water makes a noticeable difference.",
            "A doctor is the right person to ask about anything that worries you.",
        ),
        tips=(
            "Go to bed and get up at the same times every day.",
            "Take a short walk after meals.",
            "Keep a bottle of water within reach.",
            "Add one new healthy habit at a time.",
            "Talk to a doctor before starting a demanding new routine.",
        ),
        list_intros=("Here are a few habits that support good health:",),
        poem_intros=("Here is a short poem about a quiet morning walk:",),
        offers=("Would you like to talk about healthy habits today?",),
    ),
    Subject(
        keywords=words(
            "learn learning study studying language languages exam exams book books read reading "
            "school university teacher lesson lessons practice homework memory"
        ),
        openings=(
            "Learning sticks best when you practise recalling things, not just rereading them.",
            "Most skills grow through short, regular sessions rather than long, rare ones.",
        ),
        middles=(
            "Spacing your practice over days helps the memory hold on.",
            "Explaining an idea in your own words is one of the best tests of understanding.",
        ),
        points=(
            "Short daily sessions work better than one long weekly one.",
            "Testing yourself is a way of learning, not only of measuring.",
            "Mistakes show exactly where to focus next.",
            "Teaching someone else deepens your own understanding.",
        ),
        tips=(
            "Set a small goal for each study session.",
            "Quiz yourself instead of rereading your notes.",
            "Spread your reviews over several days.",
            "Explain what you learned to a friend.",
            "Take short breaks to keep your focus.",
        ),
        list_intros=("Here are a few ways to learn more effectively:",),
        poem_intros=("Here is a short poem about learning something new:",),
        offers=("Would you like to talk about learning today?",),
    ),
    Subject(
        keywords=words(
            "history historical ancient empire empires war wars king kings queen century centuries "
            "castle castles lighthouse lighthouses museum civilization past medieval revolution"
        ),
        openings=(
            "History is easier to follow when you look at the people involved and what they wanted.",
            "Most historical change happened more slowly, and less neatly, than it looks in summaries.",
        ),
        middles=(
            "Trade, geography and technology often explain as much as famous battles do.",
            "Primary sources, written at the time, show how people saw their own world.",
        ),
        points=(
            "Dates matter less than causes and consequences.",
            "Every account was written by someone with a point of view.",
            "Ordinary lives are as revealing as famous ones.",
            "The same event can look very different from two sides.",
        ),
        tips=(
            "Start with a short overview before reading in depth.",
            "Draw a timeline of the main events.",
            "Read at least one source written at the time.",
            "Visit a local museum or historic site.",
            "Compare two accounts of the same event.",
        ),
        list_intros=("Here are a few ways to explore history:",),
        poem_intros=("Here is a short poem about the distant past:",),
        offers=("Would you like to talk about history today?",),
    ),
    Subject(
        keywords=words(
            "work job jobs career meeting meetings team teams project projects productivity deadline "
            "deadlines manager office email business plan planning"
        ),
        openings=(
            "Most work goes better with a clear goal, a short plan and regular check-ins.",
            "Good teams agree on what done looks like before they start.",
        ),
        middles=(
            "Small, visible steps keep a project moving and make problems show early.",
            "Writing decisions down saves many repeated conversations later.",
        ),
        points=(
            "A short written plan beats a long verbal one.",
            "Meetings work best with an agenda and a clear end.",
            "Finishing one task is worth more than starting three.",
            "Asking for help early is a sign of good judgement.",
        ),
        tips=(
            "Write down the three most important tasks each morning.",
            "Block time in your calendar for focused work.",
            "End every meeting with agreed next steps.",
            "Review what went well at the end of each week.",
            "Turn off notifications while you concentrate.",
        ),
        list_intros=("Here are a few ways to get more done at work:",),
        poem_intros=("Here is a short poem about a busy working day:",),
        offers=("Would you like to talk about work today?",),
    ),
    Subject(
        keywords=words(
            "travel travelling traveling trip trips city cities country countries holiday holidays "
            "vacation flight flights train trains journey hotel beach"
        ),
        openings=(
            "Good trips usually combine a little planning with plenty of room for surprises.",
            "Travel is as much about the people you meet as the places you see.",
        ),
        middles=(
            "Slower journeys often leave the strongest memories.",
            "Learning a few words of the local language goes a long way.",
        ),
        points=(
            "Booking early usually costs less.",
            "A light bag makes every day easier.",
            "Local food is one of the best guides to a place.",
            "Keep copies of your important documents.",
        ),
        tips=(
            "Pack a day before you leave and remove one thing.",
            "Learn how to say hello and thank you in the local language.",
            "Walk around your first day instead of rushing to sights.",
            "Keep some cash for places that take nothing else.",
            "Leave one free day in every week of travel.",
        ),
        list_intros=("Here are a few tips for a better trip:",),
        poem_intros=("Here is a short poem about setting out on a journey:",),
        offers=("Would you like to talk about travel today?",),
    ),
    Subject(
        keywords=frozenset(),
        openings=(
            "A good way to approach a question like this is to start with what you already know.",
            "Questions like this are easier when you break them into smaller parts.",
            "There are usually a few simple ideas at the heart of a topic like this.",
        ),
        middles=(
            "From there, each step builds on the one before it.",
            "Once the basics are clear, the details tend to fall into place.",
            "Looking at a concrete example often helps more than a general rule.",
        ),
        points=(
            "Start from the basics and build up step by step.",
            "Look for a concrete example that shows the idea at work.",
            "Check what you have understood by explaining it in your own words.",
            "Notice which parts still feel unclear, and go back to them.",
        ),
        tips=(
            "Write down what you want to achieve.",
            "Break the work into small steps.",
            "Start with the step that is easiest to finish.",
            "Check your progress at the end of each day.",
            "Ask for feedback from someone you trust.",
        ),
        list_intros=("Here are a few ideas to get you started:", "Here are a few steps worth trying:"),
        poem_intros=("Here is a short poem for you:", "Here is a small poem:"),
        offers=("What would you like to talk about today?", "How can I help you today?"),
    ),
)

GREETINGS = (
    "Hello! It is good to hear from you.",
    "Hi there, and welcome.",
    "Hello, and thank you for writing.",
)

POEM_CLOSING = ("I hope you enjoy it.", "Ask for another one if you like.")

CLOSING = (
    "I hope this helps.",
    "Ask again if you would like more detail.",
    "That is the heart of it, in a few words.",
    "_This reply comes from the built-in demo model; set `OPENAI_API_KEY` for a real one._",
)

POEMS = (
    "Morning fog lifts slow\nover the quiet harbour\nboats wake one by one",
    "Rain on the window\nthe kettle begins to sing\nthe afternoon rests",
    "Old oak in the wind\nholding a hundred autumns\nin its patient rings",
    "Stars above the field\neach one older than the hills\nstill they feel close tonight",
    "A page turns softly\nthe lamp hums beside the chair\nthe story goes on",
    "Snow on the mountain\nthe path ahead disappears\nfootsteps start a new one",
)


@dataclass(frozen=True)
class Task:
    """A small function the demo model can write, and the beginnings of the words that ask for it."""

    stems: tuple[str, ...]
    does: str
    code: str  # a blank line first, for reading here
    notes: tuple[str, ...]

    def asked(self, words: set[str]) -> bool:
        return any(word.startswith(self.stems) for word in words) if self.stems else False


CODE: tuple[Task, ...] = (
    Task(
        ("revers", "backward"),
        "returns a text written backwards",
        '''
def reverse_text(text: str) -> str:
    """Return text with its characters in reverse order."""
    return text[::-1]
''',
        (
            "A slice with a step of -1 walks the text from its last character to its first.",
            "Strings cannot change in place, so this makes a new one.",
        ),
    ),
    Task(
        ("palindrom",),
        "tells whether a text reads the same backwards",
        '''
def is_palindrome(text: str) -> bool:
    """Tell whether text reads the same backwards, ignoring case and punctuation."""
    letters = [c.lower() for c in text if c.isalnum()]
    return letters == letters[::-1]
''',
        (
            "Only letters and digits are compared, all in lower case.",
            "`[::-1]` is the list read from the end.",
        ),
    ),
    Task(
        ("fibonacci",),
        "returns the first Fibonacci numbers",
        '''
def fibonacci(n: int) -> list[int]:
    """Return the first n Fibonacci numbers."""
    numbers = []
    a, b = 0, 1
    for _ in range(n):
        numbers.append(a)
        a, b = b, a + b
    return numbers
''',
        ("Each number is the sum of the two before it.", "The loop keeps only the last two numbers in hand."),
    ),
    Task(
        ("prime",),
        "tells whether a number is prime",
        '''
def is_prime(n: int) -> bool:
    """Tell whether n is a prime number."""
    if n < 2:
        return False
    divisor = 2
    while divisor * divisor <= n:
        if n % divisor == 0:
            return False
        divisor += 1
    return True
''',
        ("Numbers below 2 are not prime.", "Divisors only need checking up to the square root of n."),
    ),
    Task(
        ("factorial",),
        "returns the factorial of a whole number",
        '''
def factorial(n: int) -> int:
    """Return n! for a whole number n of at least 0."""
    result = 1
    for k in range(2, n + 1):
        result *= k
    return result
''',
        ("The factorial of 0 and of 1 is 1.", "Each step multiplies in the next whole number."),
    ),
    Task(
        ("sort", "order"),
        "sorts words from shortest to longest",
        '''
def sort_by_length(words: list[str]) -> list[str]:
    """Return the words from shortest to longest, alphabetically within each length."""
    return sorted(words, key=lambda word: (len(word), word))
''',
        (
            "`sorted()` returns a new list and leaves the original alone.",
            "The key sorts by length first, then alphabetically.",
        ),
    ),
    Task(
        ("vowel",),
        "counts the vowels in a text",
        '''
def count_vowels(text: str) -> int:
    """Return how many vowels text holds."""
    return sum(1 for letter in text.lower() if letter in "aeiou")
''',
        ("Lower-casing the text first counts capital vowels too.", "`sum()` adds one for every vowel found."),
    ),
    Task(
        ("celsius", "fahrenheit", "temperatur"),
        "converts a temperature from Celsius to Fahrenheit",
        '''
def celsius_to_fahrenheit(celsius: float) -> float:
    """Convert a temperature from degrees Celsius to degrees Fahrenheit."""
    return celsius * 9 / 5 + 32
''',
        ("Water freezes at 0 °C, which is 32 °F.", "Each degree Celsius is 1.8 degrees Fahrenheit."),
    ),
    Task(
        (),
        "counts how often each word appears in a text",
        '''
def word_counts(text: str) -> dict[str, int]:
    """Return how often each word appears in text, ignoring case."""
    counts: dict[str, int] = {}
    for word in text.lower().split():
        counts[word] = counts.get(word, 0) + 1
    return counts
''',
        (
            "Lower-casing the text counts `The` and `the` as one word.",
            "`get(word, 0)` starts each new word at zero.",
        ),
    ),
)
