"""The simulated world's facts: what the prompt families ask about and the answers gold checks.

Plain data, small enough to read; app/simulation/tasks.py builds prompts from it and checks answers
against it. Every answer here is one a 135M instruction model can plausibly give.
"""

from __future__ import annotations

CAPITALS = {
    "France": "Paris",
    "Japan": "Tokyo",
    "Italy": "Rome",
    "Spain": "Madrid",
    "Germany": "Berlin",
    "Egypt": "Cairo",
    "Canada": "Ottawa",
    "Russia": "Moscow",
    "China": "Beijing",
    "the United Kingdom": "London",
    "Greece": "Athens",
    "Portugal": "Lisbon",
    "Ireland": "Dublin",
    "Norway": "Oslo",
    "Sweden": "Stockholm",
    "Kenya": "Nairobi",
    "Peru": "Lima",
    "Austria": "Vienna",
    "Poland": "Warsaw",
    "Thailand": "Bangkok",
    "Argentina": "Buenos Aires",
    "Australia": "Canberra",
    "India": "New Delhi",
    "Cuba": "Havana",
    "Finland": "Helsinki",
    "Denmark": "Copenhagen",
    "Hungary": "Budapest",
    "Turkey": "Ankara",
    "South Korea": "Seoul",
    "Belgium": "Brussels",
}

YES_NO = {
    "Is the sun a star?": True,
    "Do fish live in water?": True,
    "Is ice frozen water?": True,
    "Do birds have feathers?": True,
    "Is Paris in France?": True,
    "Does the Earth orbit the sun?": True,
    "Is seven an odd number?": True,
    "Do bees make honey?": True,
    "Is the ocean salty?": True,
    "Can penguins swim?": True,
    "Do plants need light to grow?": True,
    "Is gold a metal?": True,
    "Is the moon made of cheese?": False,
    "Can dogs fly?": False,
    "Is ice hotter than boiling water?": False,
    "Do snakes have legs?": False,
    "Is ten smaller than three?": False,
    "Is the sun cold?": False,
    "Do cows lay eggs?": False,
    "Is Tokyo in Brazil?": False,
    "Do humans have three arms?": False,
    "Is salt sweet?": False,
    "Can a rock breathe?": False,
    "Is the sky green on a clear day?": False,
}

CATEGORIES = {
    "colors": "red blue green yellow orange purple pink black white brown gray violet",
    "fruits": "apple apples banana bananas orange oranges grape grapes mango mangoes pear pears cherry "
    "cherries strawberry strawberries lemon lemons peach peaches plum plums kiwi pineapple watermelon",
    "animals": "dog dogs cat cats horse horses cow cows lion lions tiger tigers elephant elephants bear bears "
    "rabbit rabbits monkey monkeys sheep wolf wolves fox foxes deer giraffe giraffes zebra zebras",
    "vegetables": "carrot carrots potato potatoes tomato tomatoes onion onions broccoli spinach lettuce pea "
    "peas cabbage corn pepper peppers cucumber cucumbers beans celery",
    "planets": "mercury venus earth mars jupiter saturn uranus neptune",
    "musical instruments": "piano guitar violin drum drums flute trumpet cello harp saxophone clarinet "
    "trombone ukulele banjo",
    "sports": "soccer football tennis basketball baseball golf swimming hockey cricket rugby volleyball "
    "running cycling boxing skiing",
    "metals": "iron gold silver copper aluminum aluminium tin lead zinc nickel platinum steel titanium",
    "flowers": "rose roses tulip tulips daisy daisies lily lilies sunflower sunflowers orchid orchids "
    "daffodil daffodils lavender violet violets poppy poppies",
    "birds": "eagle eagles sparrow sparrows robin robins owl owls penguin penguins parrot parrots crow "
    "crows pigeon pigeons duck ducks swan swans hawk hawks",
    "vehicles": "car cars bus buses truck trucks bicycle bicycles bike train trains airplane plane boat "
    "boats motorcycle ship ships van",
    "countries": " ".join(name.lower() for name in CAPITALS if " " not in name)
    + " brazil mexico chile usa america nigeria",
}
"""category → members (singular and plural count as one member: see tasks._member_key)."""

TOPICS = {
    "honey bees": "honey hive flowers pollen queen nectar wax sting colony insects pollinate workers",
    "the moon": "earth orbit craters night light sun tides phases astronauts gravity space surface",
    "volcanoes": "lava magma eruption erupt mountain ash rock crater earth hot explode heat",
    "rain": "clouds water drops weather wet storm umbrella sky falls plants cycle",
    "bread": "flour yeast bake baked oven dough wheat water loaf toast slice",
    "chess": "board pieces king queen pawn knight bishop rook checkmate game move moves",
    "trains": "tracks rails rail station passengers engine travel locomotive steam freight carriages",
    "the ocean": "water salt waves fish sea deep whales tides coral blue marine",
    "sleep": "rest body brain night dream dreams bed tired hours energy health",
    "coffee": "beans caffeine drink cup hot morning roast brew espresso energy",
    "penguins": "birds ice swim antarctica fish cold waddle eggs colonies flightless",
    "libraries": "books read borrow librarian shelves quiet knowledge study free community",
    "glaciers": "ice snow melt melting mountains cold frozen slowly climate valleys",
    "owls": "birds night hunt eyes feathers nocturnal mice hoot wings prey",
    "gardens": "plants flowers soil water seeds grow vegetables sun garden weeds",
    "bicycles": "wheels pedals ride riding exercise chain handlebars helmet brakes cycling",
}
"""topic → words an on-topic answer tends to use (beyond the topic's own words)."""

NUMBER_WORDS = {
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
}
