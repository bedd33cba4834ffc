"""Switchboard menus: compiled from the dialplan, run by a state machine: pure.

The machine is an enum of states and ONE transition table from (state, input) to a handler;
each handler returns the next state and the actions for the I/O side. Inputs carry ``now``
(the event loop's clock); the machine says when it next needs a ``TIMEOUT`` (``deadline``).

States: ``PROMPTING`` (a prompt plays; a key barges in), ``COLLECTING`` (prompt over, waiting
for the first key until ``first_digit_timeout``), ``EXTENSION`` (keys of a short number until
its length, ``#`` or ``inter_digit_timeout``), ``DONE`` (connected or hung up: inputs are
ignored). A missing key or an invalid choice costs a retry, with the invalid prompt played
before the menu again; after ``retries`` of them the menu's ``on_exhausted`` choice happens.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import Enum

from gateway.routing.models import MenuAction, MenuGoto, SwitchboardMenu
from gateway.routing.models import Switchboard as SwitchboardModel


class ChoiceKind(Enum):
    HUNT = "hunt"
    MEMBER = "member"
    MENU = "menu"
    OPERATOR = "operator"
    REPEAT = "repeat"
    HANGUP = "hangup"


@dataclass(frozen=True, slots=True)
class Choice:
    kind: ChoiceKind
    argument: str | None = None

    def describe(self) -> str:
        return self.kind.value if self.argument is None else f"{self.kind.value}:{self.argument}"


def choice_of(model: MenuAction | MenuGoto) -> Choice:
    if isinstance(model, MenuAction):
        return Choice(ChoiceKind(model.value))
    if model.hunt is not None:
        return Choice(ChoiceKind.HUNT, model.hunt)
    if model.member is not None:
        return Choice(ChoiceKind.MEMBER, model.member)
    assert model.menu is not None
    return Choice(ChoiceKind.MENU, model.menu)


@dataclass(frozen=True, slots=True)
class Menu:
    name: str
    prompts: tuple[str, ...]
    options: Mapping[str, Choice]
    extension_length: int | None
    """Length of the group's short numbers when dial-by-extension is on."""
    extension_start: str | None
    """The digit short numbers begin with (None: any digit that is not an option)."""
    first_digit_timeout: float
    inter_digit_timeout: float
    retries: int
    invalid_prompts: tuple[str, ...]
    on_exhausted: Choice

    @classmethod
    def compile(cls, name: str, model: SwitchboardMenu, short_length: int, leading: str | None) -> Menu:
        return cls(
            name,
            tuple(model.prompt),
            {key: choice_of(choice) for key, choice in model.options.items()},
            short_length if model.dial_by_extension else None,
            leading,
            model.first_digit_timeout,
            model.inter_digit_timeout,
            model.retries,
            tuple(model.invalid_prompt),
            choice_of(model.on_exhausted),
        )

    def starts_extension(self, key: str) -> bool:
        if self.extension_length is None or not key.isdigit():
            return False
        if self.extension_start is not None:
            return key == self.extension_start
        return key not in self.options


@dataclass(frozen=True, slots=True)
class MenuSet:
    """The menus of one group's switchboard, by name."""

    menus: Mapping[str, Menu]

    @classmethod
    def compile(cls, model: SwitchboardModel, short_length: int, leading: str | None) -> MenuSet:
        return cls({name: Menu.compile(name, m, short_length, leading) for name, m in model.menus.items()})


# -- actions for the I/O side -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Play:
    """Play these prompts in order (replacing whatever plays); report ``PROMPT_END`` after."""

    prompts: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class StopPlaying:
    """A key barged in: stop the prompt."""


@dataclass(frozen=True, slots=True)
class Connect:
    """Connect the caller: a hunt group, a member (short or long number) or the operator."""

    choice: Choice
    digits: str
    """Every key the caller pressed in the menus (charging records the switchboard path)."""


@dataclass(frozen=True, slots=True)
class HangUp:
    """End the call (after ``prompts``, e.g. goodbye)."""

    prompts: tuple[str, ...]


Action = Play | StopPlaying | Connect | HangUp


class MenuState(Enum):
    PROMPTING = "prompting"
    COLLECTING = "collecting"
    EXTENSION = "extension"
    DONE = "done"


class MenuInput(Enum):
    DIGIT = "a key"
    PROMPT_END = "the prompt finished playing"
    TIMEOUT = "the deadline passed"


GOODBYE = ("goodbye_zh", "goodbye_en")

_S, _I = MenuState, MenuInput
Handler = Callable[["MenuSession", str, float], tuple[MenuState, list[Action]]]


@dataclass(slots=True)
class MenuSession:
    """One caller in the menus. Create, then :meth:`start`; feed :meth:`digit`,
    :meth:`prompt_end` and (when ``now >= deadline``) :meth:`timeout`."""

    menus: MenuSet
    menu: Menu
    state: MenuState = MenuState.PROMPTING
    deadline: float | None = None
    failures: int = 0
    buffer: str = ""
    keyed: str = ""
    path: list[str] = field(default_factory=list)
    """Menu names and choices taken (for logs and the charging switchboard path)."""

    @classmethod
    def begin(cls, menus: MenuSet, menu: str) -> MenuSession:
        return cls(menus, menus.menus[menu], path=[f"menu:{menu}"])

    def start(self, now: float) -> list[Action]:
        self.state = MenuState.PROMPTING
        self.deadline = None
        return [Play(self.menu.prompts)]

    def digit(self, key: str, now: float) -> list[Action]:
        return self._feed(MenuInput.DIGIT, key, now)

    def prompt_end(self, now: float) -> list[Action]:
        return self._feed(MenuInput.PROMPT_END, "", now)

    def timeout(self, now: float) -> list[Action]:
        if self.deadline is None or now < self.deadline:
            return []
        return self._feed(MenuInput.TIMEOUT, "", now)

    @property
    def done(self) -> bool:
        return self.state is MenuState.DONE

    def _feed(self, event: MenuInput, key: str, now: float) -> list[Action]:
        handler = TABLE[self.state, event]
        self.state, actions = handler(self, key, now)
        return actions

    # -- handlers ---------------------------------------------------------------------------------
    def _prompt_over(self, _key: str, now: float) -> tuple[MenuState, list[Action]]:
        self.deadline = now + self.menu.first_digit_timeout
        return MenuState.COLLECTING, []

    def _first_key(self, key: str, now: float) -> tuple[MenuState, list[Action]]:
        self.keyed += key
        stop: list[Action] = [StopPlaying()] if self.state is MenuState.PROMPTING else []
        if self.menu.starts_extension(key):
            self.buffer = key
            self.deadline = now + self.menu.inter_digit_timeout
            return MenuState.EXTENSION, stop
        choice = self.menu.options.get(key)
        if choice is None:
            state, actions = self._failed(now)
            return state, stop + actions
        state, actions = self._choose(choice, now)
        return state, stop + actions

    def _extension_key(self, key: str, now: float) -> tuple[MenuState, list[Action]]:
        self.keyed += key
        if key == "#":
            return self._extension_complete(now)
        if not key.isdigit():
            return self._failed(now)
        self.buffer += key
        length = self.menu.extension_length or 0
        if len(self.buffer) >= length:
            return self._extension_complete(now)
        self.deadline = now + self.menu.inter_digit_timeout
        return MenuState.EXTENSION, []

    def _extension_complete(self, now: float) -> tuple[MenuState, list[Action]]:
        number, self.buffer = self.buffer, ""
        if len(number) == self.menu.extension_length:
            return self._choose(Choice(ChoiceKind.MEMBER, number), now)
        if len(number) == 1 and number in self.menu.options:  # a lone key that is also an option
            return self._choose(self.menu.options[number], now)
        return self._failed(now)

    def _no_key(self, _key: str, now: float) -> tuple[MenuState, list[Action]]:
        return self._failed(now, invalid=False)

    def _extension_timeout(self, _key: str, now: float) -> tuple[MenuState, list[Action]]:
        return self._extension_complete(now)

    def _ignore(self, _key: str, _now: float) -> tuple[MenuState, list[Action]]:
        return self.state, []

    # -- outcomes ---------------------------------------------------------------------------------
    def _failed(self, now: float, *, invalid: bool = True) -> tuple[MenuState, list[Action]]:
        self.failures += 1
        self.path.append("invalid" if invalid else "no-input")
        if self.failures > self.menu.retries:
            return self._choose(self.menu.on_exhausted, now, exhausted=True)
        self.deadline = None
        prompts = (*self.menu.invalid_prompts, *self.menu.prompts) if invalid else self.menu.prompts
        return MenuState.PROMPTING, [Play(prompts)]

    def _choose(
        self, choice: Choice, now: float, *, exhausted: bool = False
    ) -> tuple[MenuState, list[Action]]:
        self.deadline = None
        self.path.append(choice.describe())
        kind = choice.kind
        if kind is ChoiceKind.REPEAT and not exhausted:
            return MenuState.PROMPTING, [Play(self.menu.prompts)]
        if kind is ChoiceKind.MENU and choice.argument is not None:
            self.menu = self.menus.menus[choice.argument]
            self.failures = 0
            return MenuState.PROMPTING, [Play(self.menu.prompts)]
        if kind in (ChoiceKind.HANGUP, ChoiceKind.REPEAT):
            return MenuState.DONE, [HangUp(GOODBYE)]
        return MenuState.DONE, [Connect(choice, self.keyed)]

    def back_to_menu(self, now: float) -> list[Action]:
        """Nobody answered and the hunt group says ``repeat``: the caller is in the menu again."""
        self.failures = 0
        self.path.append(f"menu:{self.menu.name}")
        return self.start(now)


TABLE: dict[tuple[MenuState, MenuInput], Handler] = {
    (_S.PROMPTING, _I.DIGIT): MenuSession._first_key,
    (_S.PROMPTING, _I.PROMPT_END): MenuSession._prompt_over,
    (_S.PROMPTING, _I.TIMEOUT): MenuSession._ignore,
    (_S.COLLECTING, _I.DIGIT): MenuSession._first_key,
    (_S.COLLECTING, _I.PROMPT_END): MenuSession._ignore,
    (_S.COLLECTING, _I.TIMEOUT): MenuSession._no_key,
    (_S.EXTENSION, _I.DIGIT): MenuSession._extension_key,
    (_S.EXTENSION, _I.PROMPT_END): MenuSession._ignore,
    (_S.EXTENSION, _I.TIMEOUT): MenuSession._extension_timeout,
    (_S.DONE, _I.DIGIT): MenuSession._ignore,
    (_S.DONE, _I.PROMPT_END): MenuSession._ignore,
    (_S.DONE, _I.TIMEOUT): MenuSession._ignore,
}
"""Every (state, input) pair has a row: the machine has no undefined transition."""
